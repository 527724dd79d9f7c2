"""The address filter, as properties: every refused range in every IPv6 disguise, and the rest.

The refused ranges are written out here again, independently of classification/fetching.py, so
a range dropped from the filter fails these tests.
"""

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from classification.intake.fetching import address_is_refused

REFUSED_V4 = [
    ipaddress.IPv4Network(cidr)
    for cidr in [
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.31.196.0/24", "192.52.193.0/24",
        "192.88.99.0/24", "192.168.0.0/16", "192.175.48.0/24", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    ]
]  # fmt: skip
REFUSED_V6 = [
    ipaddress.IPv6Network(cidr)
    for cidr in [
        "::/96", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32", "3fff::/20",
        "5f00::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
    ]
]  # fmt: skip


def in_refused_v4(address: ipaddress.IPv4Address) -> bool:
    return any(address in network for network in REFUSED_V4)


def addresses_in(network) -> st.SearchStrategy:
    first, last = int(network.network_address), int(network.broadcast_address)
    return st.integers(first, last).map(type(network.network_address))


refused_v4 = st.sampled_from(REFUSED_V4).flatmap(addresses_in)
any_v4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
global_v4 = any_v4.filter(lambda address: not in_refused_v4(address))


def ipv6_forms(address: ipaddress.IPv4Address) -> list[ipaddress.IPv6Address]:
    """The IPv6 spellings of an IPv4 address: mapped, 6to4 (any suffix) and NAT64."""
    value = int(address)
    return [
        ipaddress.IPv6Address((0xFFFF << 32) | value),  # ::ffff:a.b.c.d
        ipaddress.IPv6Address((0x2002 << 112) | (value << 80) | 0x1),  # 2002:aabb:ccdd::1
        ipaddress.IPv6Address((0x64FF9B << 96) | value),  # 64:ff9b::a.b.c.d
    ]


@given(refused_v4)
def test_every_address_in_a_refused_ipv4_range_is_refused(address):
    assert address_is_refused(address)


@given(refused_v4)
def test_every_ipv6_disguise_of_a_refused_ipv4_address_is_refused(address):
    for form in ipv6_forms(address):
        assert address_is_refused(form), form


@given(any_v4)
def test_ipv4_compatible_addresses_are_always_refused(address):
    assert address_is_refused(ipaddress.IPv6Address(int(address)))  # ::a.b.c.d


@given(st.sampled_from(REFUSED_V6).flatmap(addresses_in))
def test_every_address_in_a_refused_ipv6_range_is_refused(address):
    assert address_is_refused(address)


@given(global_v4)
def test_global_ipv4_addresses_and_their_ipv6_forms_are_allowed(address):
    assert not address_is_refused(address)
    for form in ipv6_forms(address):
        assert not address_is_refused(form), form


@given(st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address))
def test_ipv6_outside_global_unicast_is_refused_unless_it_stands_for_a_global_ipv4(address):
    unwrapped = address.ipv4_mapped or address.sixtofour
    if address in ipaddress.IPv6Network("64:ff9b::/96"):
        unwrapped = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in ipaddress.IPv6Network("::/96"):
        expected = True
    elif unwrapped is not None:
        expected = in_refused_v4(unwrapped)
    elif address not in ipaddress.IPv6Network("2000::/3"):
        expected = True
    else:
        expected = any(address in network for network in REFUSED_V6)
    assert address_is_refused(address) == expected


@given(st.integers(0x2000 << 112, (0x4000 << 112) - 1).map(ipaddress.IPv6Address))
def test_global_unicast_ipv6_outside_the_refused_ranges_is_allowed(address):
    special = any(address in network for network in REFUSED_V6) or address.sixtofour is not None
    if not special:
        assert not address_is_refused(address)


@given(refused_v4)
def test_the_allowlist_opens_only_the_exact_spelling_of_its_ranges(address):
    allowlist = [ipaddress.ip_network(f"{address}/32")]
    if not (address.is_multicast or address.is_unspecified or str(address) == "255.255.255.255"):
        assert not address_is_refused(address, allowlist=allowlist)
    for form in ipv6_forms(address):
        assert address_is_refused(form, allowlist=allowlist)


def test_the_unspecified_and_multicast_addresses_are_refused_even_when_allowlisted():
    everything = [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
    for text in ["0.0.0.0", "::", "224.0.0.1", "ff02::1", "255.255.255.255"]:
        assert address_is_refused(ipaddress.ip_address(text), allowlist=everything)
    assert not address_is_refused(ipaddress.ip_address("10.0.0.1"), allowlist=everything)


def test_well_known_public_addresses_are_allowed():
    for text in ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700:4700::1111", "2a00:1450::1"]:
        assert not address_is_refused(ipaddress.ip_address(text)), text
