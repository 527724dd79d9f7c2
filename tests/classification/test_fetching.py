"""image_url: every SSRF case of the issue, through POST /classify-image, under the tripwire.

The tripwire (tests/classification/conftest.py) fails any test whose code looked up a name no
test set up or connected anywhere but loopback, so a broken filter cannot send a packet out.
"""

import functools
import gzip
import socket

import pytest

from bench.loopback import free_port
from classification.serving.services import ImageSource, image_source_classify
from tests.support.fetch import gzip_bomb
from tests.support.images import image_bytes

pytestmark = pytest.mark.django_db

UNREACHABLE = "url_unreachable"


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code, response.json()
    assert response.json()["error"]["message"]


# --- What works -------------------------------------------------------------------------------


def test_an_image_url_is_fetched_and_classified(classify, image_server):
    response = classify(image_url=f"{image_server.base}/red.png")
    assert response.status_code == 200, response.content
    assert response.json()["model"]["name"] == "tiny"
    assert image_server.hits("/red.png") == 1


def test_the_request_keeps_the_host_name_and_port_in_the_host_header(classify, image_server):
    classify(image_url=f"{image_server.base}/red.png")
    (seen,) = image_server.requests
    assert seen.host == f"images.test:{image_server.port}"


def test_an_allowlisted_literal_address_is_fetched(classify, image_server):
    response = classify(image_url=f"http://127.0.0.1:{image_server.port}/red.png")
    assert response.status_code == 200, response.content


def test_the_fetch_time_is_part_of_the_timings(image_server, tiny_model):
    result = image_source_classify(
        source=ImageSource(kind="url", url=f"{image_server.base}/red.png"), top_k=1
    )
    assert result.timings["fetch"] > 0
    assert {"decode", "preprocess", "inference"} <= set(result.timings)


def test_gzip_encoded_images_are_decoded(classify, image_server):
    png = image_bytes(format="PNG", size=(8, 8))
    image_server.route("/gz.png", body=gzip.compress(png), headers={"Content-Encoding": "gzip"})
    assert classify(image_url=f"{image_server.base}/gz.png").status_code == 200


# --- Literal addresses and URL forms --------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.2",  # loopback, but only 127.0.0.1/32 is allowed
        "[::1]",
        "[::ffff:127.0.0.1]",  # IPv4-mapped loopback
        "[::127.0.0.1]",  # IPv4-compatible loopback
        "[2002:7f00:1::]",  # 6to4 of 127.0.0.1
        "[64:ff9b::7f00:1]",  # NAT64 of 127.0.0.1
        "[64:ff9b::a9fe:a9fe]",  # NAT64 of the metadata service
        "0.0.0.0",
        "169.254.169.254",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "192.0.2.1",
        "[fd00::1]",
        "[fe80::1]",
        "[::]",
        "224.0.0.1",
        "[ff02::1]",
        "255.255.255.255",
    ],
)
def test_refused_literal_addresses_are_unreachable(classify, image_server, host):
    response = classify(image_url=f"http://{host}:{image_server.port}/red.png")
    assert_error(response, 422, UNREACHABLE)
    assert image_server.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "http://0177.1/red.png",  # octal 127.0.0.1
        "http://2130706433/red.png",  # 127.0.0.1 as one number
        "http://0x7f.0.0.1/red.png",
        "http://127.1/red.png",
        "http://017700000001/red.png",
        "file:///etc/passwd",
        "ftp://images.test/red.png",
        "gopher://images.test:70/_GET",
        "data:image/png;base64,iVBORw0KGgo=",
        "javascript:alert(1)",
        "images.test/red.png",
        "http:///red.png",
        "http://user:secret@images.test/red.png",
        "http://images.test@127.0.0.1/red.png",
        "http://images.test\\@127.0.0.1/",
        "http://images.test:99999/red.png",
        "http://images.test:0/red.png",
        "http://[::1%25lo]/red.png",
        "http://[not-an-address]/",
        "http://images.test/red png",
        "http://images.test/\r\nX-Injected: 1",
        "http://" + "a" * 64 + ".test/",
        "http://" + ".".join(["abcdefghi"] * 26) + ".test/",
        "http://images.test/" + "a" * 2048,
        "",
    ],
)
def test_refused_schemes_and_forms_are_invalid(classify, image_server, url):
    assert_error(classify(image_url=url), 400, "invalid_url")
    assert image_server.requests == []


# --- Names ------------------------------------------------------------------------------------


def test_a_name_that_resolves_to_a_private_address_is_unreachable(classify, image_server, tripwire):
    tripwire.resolve("private.test", "10.0.0.7")
    assert_error(classify(image_url="http://private.test/red.png"), 422, UNREACHABLE)


def test_a_name_with_a_public_and_a_private_address_is_unreachable(
    classify, image_server, tripwire
):
    tripwire.resolve("mixed.test", "93.184.215.14", "10.0.0.7")
    assert_error(classify(image_url="http://mixed.test/red.png"), 422, UNREACHABLE)
    assert tripwire.connections == []  # not even the public address was tried


def test_a_name_with_a_mapped_loopback_ipv6_address_is_unreachable(
    classify, image_server, tripwire
):
    tripwire.resolve("sneaky.test", "::ffff:127.0.0.1")
    url = f"http://sneaky.test:{image_server.port}/red.png"
    assert_error(classify(image_url=url), 422, UNREACHABLE)


def test_refused_unresolvable_and_unconnectable_hosts_get_the_same_answer(
    classify, image_server, tripwire
):
    tripwire.resolve("private.test", "192.168.0.10")
    tripwire.names["nowhere.test"] = socket.gaierror
    tripwire.resolve("closed.test", "127.0.0.1")
    answers = [
        classify(image_url="http://private.test/red.png"),
        classify(image_url="http://nowhere.test/red.png"),
        classify(image_url=f"http://closed.test:{free_port()}/red.png"),
    ]
    for response in answers:
        assert_error(response, 422, UNREACHABLE)
    assert len({response.content for response in answers}) == 1


def test_the_host_is_resolved_once_so_rebinding_cannot_redirect_the_connection(
    classify, image_server, tripwire
):
    tripwire.names["rebind.test"] = lambda count: ["127.0.0.1"] if count == 1 else ["10.0.0.1"]
    response = classify(image_url=f"http://rebind.test:{image_server.port}/red.png")
    assert response.status_code == 200, response.content
    assert tripwire.lookups["rebind.test"] == 1
    assert image_server.hits("/red.png") == 1


def test_proxy_environment_variables_are_ignored(classify, image_server, tripwire, monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://10.9.9.9:3128")
    monkeypatch.setenv("NO_PROXY", "")
    response = classify(image_url=f"{image_server.base}/red.png")
    assert response.status_code == 200, response.content
    assert {host for host, _ in tripwire.connections} == {"127.0.0.1"}


# --- Redirects --------------------------------------------------------------------------------


def test_redirects_are_followed_up_to_the_limit(classify, image_server):
    image_server.route("/r3", status=302, headers={"Location": "/red.png"})
    image_server.route("/r2", status=301, headers={"Location": f"{image_server.base}/r3"})
    image_server.route("/r1", status=307, headers={"Location": "r2"})
    response = classify(image_url=f"{image_server.base}/r1")
    assert response.status_code == 200, response.content
    assert [seen.path for seen in image_server.requests] == ["/r1", "/r2", "/r3", "/red.png"]


def test_a_redirect_chain_longer_than_the_limit_is_refused(classify, image_server):
    for index in range(4):
        image_server.route(f"/r{index}", status=302, headers={"Location": f"/r{index + 1}"})
    image_server.route("/r4", status=302, headers={"Location": "/red.png"})
    response = classify(image_url=f"{image_server.base}/r0")
    assert_error(response, 502, "too_many_redirects")
    assert [seen.path for seen in image_server.requests] == ["/r0", "/r1", "/r2", "/r3"]


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://private.test/red.png",
        "http://127.0.0.2:{port}/red.png",
        "http://0177.1/",
        "file:///etc/passwd",
    ],
)
def test_a_redirect_to_a_refused_destination_is_unreachable(
    classify, image_server, tripwire, location
):
    tripwire.resolve("private.test", "10.0.0.7")
    image_server.route(
        "/jump", status=302, headers={"Location": location.format(port=image_server.port)}
    )
    response = classify(image_url=f"{image_server.base}/jump")
    assert_error(response, 422, UNREACHABLE)
    assert [seen.path for seen in image_server.requests] == ["/jump"]


def test_a_redirect_without_location_is_an_upstream_error(classify, image_server):
    image_server.route("/nowhere", status=302)
    assert_error(classify(image_url=f"{image_server.base}/nowhere"), 502, "upstream_error")


# --- What comes back --------------------------------------------------------------------------


@pytest.mark.parametrize("status", [404, 403, 500, 503, 204])
def test_an_upstream_error_status_is_a_bad_gateway(classify, image_server, status):
    image_server.route("/status", status=status, body=b"" if status == 204 else b"no")
    assert_error(classify(image_url=f"{image_server.base}/status"), 502, "upstream_error")


def test_a_dripping_server_ends_at_the_deadline(classify, image_server, fetch_settings):
    # Every byte arrives well within any per-read timeout: only the total deadline ends it.
    fetch_settings.IMAGE_FETCH_TIMEOUT = 1.0
    image_server.route("/drip", body=image_bytes(format="PNG", size=(64, 64)), drip_interval=0.2)
    assert_error(classify(image_url=f"{image_server.base}/drip"), 504, "upstream_timeout")


def test_a_server_that_never_answers_ends_at_the_deadline(classify, image_server, fetch_settings):
    fetch_settings.IMAGE_FETCH_TIMEOUT = 0.5
    image_server.route("/hang", hang=True)
    assert_error(classify(image_url=f"{image_server.base}/hang"), 504, "upstream_timeout")
    assert image_server.hits("/hang") == 1


@pytest.mark.parametrize("content_length", [True, False], ids=["content-length", "chunked"])
def test_an_over_size_body_is_refused(classify, image_server, fetch_settings, content_length):
    fetch_settings.IMAGE_MAX_BYTES = 100_000
    image_server.route(
        "/big", body=b"\xff\xd8\xff" + b"\0" * 300_000, content_length=content_length
    )
    assert_error(classify(image_url=f"{image_server.base}/big"), 413, "image_too_large")


@functools.cache
def _bomb() -> bytes:
    return gzip_bomb(200_000_000)


def test_a_gzip_bomb_is_refused_after_the_size_limit_of_decoded_bytes(
    classify, image_server, fetch_settings
):
    fetch_settings.IMAGE_MAX_BYTES = 1_000_000
    body = _bomb()
    assert len(body) < fetch_settings.IMAGE_MAX_BYTES  # small on the wire, 200 MB decoded
    image_server.route("/bomb.png", body=body, headers={"Content-Encoding": "gzip"})
    assert_error(classify(image_url=f"{image_server.base}/bomb.png"), 413, "image_too_large")


def test_a_broken_gzip_body_is_an_upstream_error(classify, image_server):
    image_server.route("/broken.png", body=b"not gzip at all", headers={"Content-Encoding": "gzip"})
    assert_error(classify(image_url=f"{image_server.base}/broken.png"), 502, "upstream_error")


def test_an_html_page_is_not_an_image(classify, image_server):
    image_server.route(
        "/page.html",
        body=b"<!doctype html><html><body><img src=/red.png></body></html>",
        headers={"Content-Type": "text/html"},
    )
    assert_error(
        classify(image_url=f"{image_server.base}/page.html"), 415, "unsupported_image_type"
    )


# --- TLS --------------------------------------------------------------------------------------


def test_https_connects_to_the_checked_address_with_the_host_name_as_tls_name(
    classify, tls_server, tripwire
):
    response = classify(image_url=f"https://secure.test:{tls_server.port}/red.png")
    assert response.status_code == 200, response.content
    assert tls_server.server_names == ["secure.test"]
    assert tls_server.requests[0].host == f"secure.test:{tls_server.port}"
    assert tripwire.lookups["secure.test"] == 1


def test_https_refuses_a_certificate_for_another_name(classify, tls_server):
    response = classify(image_url=f"https://impostor.test:{tls_server.port}/red.png")
    assert_error(response, 502, "upstream_error")
    assert tls_server.requests == []


# --- The tripwire itself ----------------------------------------------------------------------


def test_the_tripwire_stops_connections_beyond_loopback(tripwire):
    from tests.support.fetch import TripwireTripped

    with pytest.raises(TripwireTripped), socket.socket() as sock:
        sock.connect(("10.0.0.1", 80))
    with pytest.raises(TripwireTripped):
        socket.getaddrinfo("example.com", 80)
    assert len(tripwire.violations) == 2
    tripwire.violations.clear()  # seen, so this test itself passes
