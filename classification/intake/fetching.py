"""The one way this service fetches an image from a URL a client gave it.

A client-chosen URL turns the service into a web client aimed by strangers, so every outbound
image fetch goes through ``image_fetch``:

- the URL must be plain ``http``/``https`` with a host name or a canonical IP literal, no
  user:password, within length limits (``InvalidUrl``, 400);
- the host is resolved once, every address is checked (after unwrapping IPv4-mapped, 6to4 and
  NAT64 forms) against the refused ranges below, and the connection goes to the checked address
  while the Host header and TLS server name keep the host name: no second lookup, no DNS
  rebinding window. A refused address and a name that does not resolve or connect give the same
  ``UrlUnreachable`` (422), so the service is no oracle for internal names;
- proxies from the environment are never used (urllib3 connections, not ``requests``);
- redirects are followed by hand, at most IMAGE_FETCH_MAX_REDIRECTS, each hop checked as above;
- one deadline (IMAGE_FETCH_TIMEOUT) covers resolution-to-last-byte of all hops: a watchdog
  shuts the socket down when it passes, so a server dripping a byte a second still ends
  (``UpstreamTimeout``, 504);
- the decoded body (gzip and deflate included) is streamed against IMAGE_MAX_BYTES
  (``ImageTooLarge``, 413); an HTTP error status is ``UpstreamError`` (502).
"""

import ipaddress
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from http.client import HTTPException

import urllib3
from django.conf import settings
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.util.ssl_match_hostname import CertificateError

from classification.exceptions import (
    ImageTooLarge,
    InvalidUrl,
    TooManyRedirects,
    UpstreamError,
    UpstreamTimeout,
    UrlUnreachable,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2048
MAX_HOST_LENGTH = 253
_CHUNK = 64 * 1024
_REDIRECT_STATUSES = {301, 302, 303, 307, 308}
_USER_AGENT = "image-classification-service/1.0 (+image_url fetcher)"

# --- The address filter ---------------------------------------------------------------------

# Synapse's default URL-preview blocklist, completed from the IANA special-purpose registries.
REFUSED_IPV4_NETWORKS = tuple(
    ipaddress.IPv4Network(cidr)
    for cidr in (
        "0.0.0.0/8",  # "this network", includes the unspecified address
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # shared address space (carrier-grade NAT)
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, cloud metadata services
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation (TEST-NET-1)
        "192.31.196.0/24",  # AS112
        "192.52.193.0/24",  # AMT
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",  # private
        "192.175.48.0/24",  # AS112 direct delegation
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation (TEST-NET-2)
        "203.0.113.0/24",  # documentation (TEST-NET-3)
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, includes the broadcast address
    )
)
REFUSED_IPV6_NETWORKS = tuple(
    ipaddress.IPv6Network(cidr)
    for cidr in (
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments (Teredo, ORCHID, benchmarking, ...)
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
        "5f00::/16",  # segment routing SIDs
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
# Outside these, an IPv6 address is unallocated or special: refused unless it embeds IPv4.
_GLOBAL_UNICAST_IPV6 = ipaddress.IPv6Network("2000::/3")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated ::a.b.c.d, and :: and ::1
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for: IPv4-mapped, 6to4 or NAT64 (well-known)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _allowlist() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    cidrs = settings.IMAGE_FETCH_PRIVATE_ALLOWLIST
    return [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]


def address_is_refused(
    address: IPAddress, *, allowlist: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = ()
) -> bool:
    """Whether the fetcher must not connect to ``address``.

    The allowlist matches the address exactly as it is given (an allowed ``127.0.0.1/32`` does
    not open ``::ffff:127.0.0.1``); the unspecified address and multicast are never allowed.
    """
    if address.is_unspecified or address.is_multicast:
        return True
    if address == ipaddress.IPv4Address("255.255.255.255"):
        return True
    if any(address.version == network.version and address in network for network in allowlist):
        return False
    if isinstance(address, ipaddress.IPv4Address):
        return any(address in network for network in REFUSED_IPV4_NETWORKS)
    if address.scope_id is not None:
        return True
    if address in _IPV4_COMPATIBLE:
        return True  # deprecated form, never needed; includes :: and ::1
    inner = embedded_ipv4(address)
    if inner is not None:
        return address_is_refused(inner)
    if address not in _GLOBAL_UNICAST_IPV6:
        return True
    return any(address in network for network in REFUSED_IPV6_NETWORKS)


# --- URL validation -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    url: str  # normalised, without fragment
    scheme: str
    host: str  # lower-case name (IDNA, ASCII) or IP literal without brackets
    literal: IPAddress | None
    port: int
    request_target: str  # path and query
    host_header: str


_OCTET = r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_CANONICAL_IPV4 = re.compile(rf"^{_OCTET}(\.{_OCTET}){{3}}$")
# WHATWG: a host whose last label is a number is an IPv4 address, however it is spelled
# (0177.1, 2130706433, 0x7f.1). Only the canonical dotted quad is accepted.
_NUMERIC_LABEL = re.compile(r"^(0[xX][0-9a-fA-F]*|\d+)$")
_HOST_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")


def _invalid(reason: str) -> InvalidUrl:
    return InvalidUrl(f"The image URL is not acceptable: {reason}.")


def _host_name(raw: str) -> str:
    try:
        host = raw.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise _invalid("the host name is not valid") from exc
    bare = host[:-1] if host.endswith(".") else host
    if not bare or len(bare) > MAX_HOST_LENGTH:
        raise _invalid("the host name is empty or too long")
    labels = bare.split(".")
    if _NUMERIC_LABEL.match(labels[-1]):
        raise _invalid("IP addresses must be written as a plain dotted quad")
    if not all(_HOST_LABEL.match(label) for label in labels):
        raise _invalid("the host name is not valid")
    return bare


def url_target(url: str) -> _Target:
    """Check ``url`` and split it into what the fetcher needs. Raises InvalidUrl."""
    if not isinstance(url, str) or not url:
        raise _invalid("it is empty")
    if len(url) > MAX_URL_LENGTH:
        raise _invalid(f"it is longer than {MAX_URL_LENGTH} characters")
    if any(ord(char) <= 0x20 or ord(char) == 0x7F or char == "\\" for char in url):
        raise _invalid("it contains spaces, control characters or backslashes")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:  # e.g. brackets around something that is not an IPv6 address
        raise _invalid("it cannot be parsed") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise _invalid("only http and https URLs are fetched")
    if "@" in parts.netloc:
        raise _invalid("user names and passwords are not accepted in URLs")
    try:
        port = parts.port if parts.port is not None else (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise _invalid("the port is not valid") from exc
    if not 0 < port < 65536:
        raise _invalid("the port is not valid")
    raw_host = parts.hostname or ""
    literal: IPAddress | None = None
    if parts.netloc.startswith("["):
        if "%" in raw_host:
            raise _invalid("IPv6 zone identifiers are not accepted")
        try:
            literal = ipaddress.IPv6Address(raw_host)
        except ValueError as exc:
            raise _invalid("the IPv6 address is not valid") from exc
        host = str(literal)
        host_in_header = f"[{host}]"
    elif _CANONICAL_IPV4.match(raw_host):
        literal = ipaddress.IPv4Address(raw_host)
        host = host_in_header = str(literal)
    else:
        host = host_in_header = _host_name(raw_host)
    default_port = 443 if scheme == "https" else 80
    host_header = host_in_header if port == default_port else f"{host_in_header}:{port}"
    path = urllib.parse.quote(parts.path or "/", safe="/%:@!$&'()*+,;=~-._")
    query = urllib.parse.quote(parts.query, safe="/%:@!$&'()*+,;=?~-._")
    request_target = f"{path}?{query}" if query else path
    return _Target(
        url=f"{scheme}://{host_header}{request_target}",
        scheme=scheme,
        host=host,
        literal=literal,
        port=port,
        request_target=request_target,
        host_header=host_header,
    )


# --- Resolution, connection and the deadline ------------------------------------------------


def _unreachable() -> UrlUnreachable:
    # One sentence for refused, unresolvable and unconnectable hosts alike.
    return UrlUnreachable()


def _checked_addresses(target: _Target) -> list[IPAddress]:
    """Every address of the target's host, resolved once; all must pass the filter."""
    if target.literal is not None:
        addresses: list[IPAddress] = [target.literal]
    else:
        try:
            infos = socket.getaddrinfo(
                target.host, target.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        except (OSError, UnicodeError) as exc:
            raise _unreachable() from exc
        addresses = []
        for family, _, _, _, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            host = str(sockaddr[0])  # an AF_INET/AF_INET6 sockaddr starts with the address text
            address = ipaddress.ip_address(host.split("%", 1)[0])
            if address not in addresses:
                addresses.append(address)
    allowlist = _allowlist()
    if not addresses or any(address_is_refused(a, allowlist=allowlist) for a in addresses):
        raise _unreachable()
    return addresses


class _Deadline:
    """One total time budget; when it passes, a watchdog shuts down the watched socket, which
    ends any read in progress however slowly the server sends."""

    def __init__(self, seconds: float) -> None:
        self._expires = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._timer = threading.Timer(seconds, self._shutdown)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return max(0.0, self._expires - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self._expires

    def check(self) -> None:
        if self.expired:
            raise UpstreamTimeout()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._fd = sock.fileno()
        if self.expired:
            self._shutdown()

    def close_connection(self, connection: HTTPConnection) -> None:
        # Under the lock, so the watchdog never touches a file descriptor that was reused.
        with self._lock:
            self._fd = None
            connection.close()
            raw_socket = getattr(connection, "raw_socket", None)
            if raw_socket is not None:
                raw_socket.close()  # a no-op once TLS took it over; closes a failed handshake's

    def _shutdown(self) -> None:
        with self._lock:
            if self._fd is None:
                return
            # By descriptor: TLS wraps (and detaches) the socket object urllib3 created.
            sock = socket.socket(fileno=self._fd)
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            finally:
                sock.detach()

    def cancel(self) -> None:
        self._timer.cancel()


class _WatchedConnectionMixin:
    deadline: _Deadline

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        self.raw_socket = sock
        self.deadline.watch(sock)
        return sock


class _WatchedHTTPConnection(_WatchedConnectionMixin, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedConnectionMixin, HTTPSConnection):
    pass


def _connect(target: _Target, address: IPAddress, deadline: _Deadline) -> HTTPConnection:
    """A connection to ``address`` itself; TLS still names and verifies ``target.host``."""
    timeout = max(deadline.remaining(), 0.001)
    connection: _WatchedHTTPConnection | _WatchedHTTPSConnection
    if target.scheme == "https":
        connection = _WatchedHTTPSConnection(
            str(address),
            target.port,
            timeout=timeout,
            server_hostname=target.host,
            assert_hostname=target.host,
            cert_reqs="CERT_REQUIRED",
            ca_certs=settings.IMAGE_FETCH_CA_BUNDLE or None,
        )
    else:
        connection = _WatchedHTTPConnection(str(address), target.port, timeout=timeout)
    connection.deadline = deadline
    try:
        connection.connect()
    except BaseException:
        deadline.close_connection(connection)
        raise
    return connection


@dataclass(frozen=True)
class FetchedImage:
    data: bytes
    url: str  # after redirects
    content_type: str
    redirects: int


def _read_body(response: urllib3.BaseHTTPResponse, *, max_bytes: int) -> bytes:
    declared = response.headers.get("Content-Length", "")
    encoded = response.headers.get("Content-Encoding", "identity").lower() != "identity"
    if declared.isdigit() and int(declared) > max_bytes and not encoded:
        raise ImageTooLarge(f"The image at the URL is larger than {max_bytes:,} bytes.")
    chunks: list[bytes] = []
    received = 0
    while chunk := response.read(_CHUNK, decode_content=True):
        received += len(chunk)
        if received > max_bytes:
            raise ImageTooLarge(f"The image at the URL is larger than {max_bytes:,} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


_UPSTREAM_FAILURES = (OSError, HTTPException, urllib3.exceptions.HTTPError, ValueError)
_TLS_FAILURES = (urllib3.exceptions.SSLError, ssl.SSLError, CertificateError)


def _fetch_once(target: _Target, deadline: _Deadline) -> tuple[int, str, str, bytes]:
    """One request: (status, Location, Content-Type, body). The body is read for 200 only."""
    connection = None
    for address in _checked_addresses(target):
        deadline.check()
        try:
            connection = _connect(target, address, deadline)
            break
        except _TLS_FAILURES as exc:
            deadline.check()
            raise UpstreamError("The image URL's server failed the TLS handshake.") from exc
        except _UPSTREAM_FAILURES:
            deadline.check()
            continue
    if connection is None:
        raise _unreachable()
    try:
        connection.request(
            "GET",
            target.request_target,
            headers={
                "Host": target.host_header,
                "User-Agent": _USER_AGENT,
                "Accept": "image/*",
                "Accept-Encoding": "gzip, deflate",
                "Connection": "close",
            },
            preload_content=False,
            decode_content=True,
        )
        response = connection.getresponse()
        status = response.status
        location = response.headers.get("Location", "")
        content_type = response.headers.get("Content-Type", "")
        body = _read_body(response, max_bytes=settings.IMAGE_MAX_BYTES) if status == 200 else b""
        deadline.check()  # a body cut short by the watchdog is a timeout, not an image
        return status, location, content_type, body
    except _UPSTREAM_FAILURES as exc:
        deadline.check()
        if isinstance(exc, urllib3.exceptions.DecodeError):
            raise UpstreamError("The image URL sent a body that cannot be decompressed.") from exc
        raise UpstreamError("The image URL's server sent a broken HTTP answer.") from exc
    finally:
        deadline.close_connection(connection)


def image_fetch(*, url: str) -> FetchedImage:
    """The bytes at ``url`` (after at most IMAGE_FETCH_MAX_REDIRECTS checked redirects).

    Raises InvalidUrl (400), UrlUnreachable (422: refused, unresolvable or unconnectable),
    UpstreamError (502: an HTTP error status or a broken answer), TooManyRedirects (502),
    UpstreamTimeout (504: IMAGE_FETCH_TIMEOUT passed) or ImageTooLarge (413).
    """
    target = url_target(url)
    deadline = _Deadline(settings.IMAGE_FETCH_TIMEOUT)
    try:
        for redirects in range(settings.IMAGE_FETCH_MAX_REDIRECTS + 1):
            status, location, content_type, body = _fetch_once(target, deadline)
            if status == 200:
                return FetchedImage(
                    data=body, url=target.url, content_type=content_type, redirects=redirects
                )
            if status not in _REDIRECT_STATUSES:
                raise UpstreamError(f"The image URL answered with HTTP status {status}.")
            if not location:
                raise UpstreamError("The image URL redirected without saying where to.")
            try:
                target = url_target(urllib.parse.urljoin(target.url, location))
            except InvalidUrl as exc:
                # The client's URL was fine; where it leads is not a place we fetch from.
                raise _unreachable() from exc
        raise TooManyRedirects(
            f"The image URL redirected more than {settings.IMAGE_FETCH_MAX_REDIRECTS} times."
        )
    finally:
        deadline.cancel()
