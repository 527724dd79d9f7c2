"""Body abuse: over-size uploads (with and without Content-Length), two file parts, deep JSON,
an image_url that is not a string, two inputs at once. JSON errors, never a 500."""

import base64
import contextlib
import json
import socket

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.support.images import image_bytes

pytestmark = pytest.mark.django_db

PNG = image_bytes(format="PNG", size=(8, 8))


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code, response.json()


def upload(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, "image/png")


# --- Size -------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [80_000, 400_000], ids=["under-framing-allowance", "far-over"])
def test_an_over_size_upload_with_content_length_is_413(api_client, tiny_model, settings, size):
    settings.IMAGE_MAX_BYTES = 50_000
    response = api_client.post(
        "/classify-image", {"image": upload("big.png", PNG + b"\0" * size)}, format="multipart"
    )
    assert_error(response, 413, "payload_too_large")


def test_an_over_size_base64_image_is_413(api_client, tiny_model, settings):
    settings.IMAGE_MAX_BYTES = 50_000
    text = base64.b64encode(PNG + b"\0" * 60_000).decode()
    response = api_client.post("/classify-image", {"image_base64": text}, format="json")
    assert_error(response, 413, "image_too_large")


def test_an_over_size_json_body_is_413(api_client, tiny_model, settings):
    settings.IMAGE_MAX_BYTES = 50_000
    body = json.dumps({"image_url": "http://images.test/", "padding": "x" * 200_000})
    response = api_client.post("/classify-image", body, content_type="application/json")
    assert_error(response, 413, "payload_too_large")


# --- Shape ------------------------------------------------------------------------------------


def test_two_file_parts_are_refused(api_client, tiny_model):
    response = api_client.post(
        "/classify-image",
        {"image": [upload("a.png", PNG), upload("b.png", PNG)]},
        format="multipart",
    )
    assert_error(response, 400, "invalid_request")


def test_two_file_parts_under_different_names_are_refused(api_client, tiny_model):
    response = api_client.post(
        "/classify-image",
        {"image": upload("a.png", PNG), "other": upload("b.png", PNG)},
        format="multipart",
    )
    assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize(
    "body",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"image_url": ' + "[" * 5_000 + "]" * 5_000 + "}",
        '{"a": ' * 40 + "1" + "}" * 40,
    ],
    ids=["arrays", "inside-a-field", "objects"],
)
def test_deeply_nested_json_is_a_malformed_request(api_client, tiny_model, body):
    response = api_client.post("/classify-image", body, content_type="application/json")
    assert_error(response, 400, "malformed_request")


def test_nesting_up_to_the_limit_and_brackets_inside_strings_are_fine(
    api_client, tiny_model, settings
):
    depth = settings.REQUEST_JSON_MAX_DEPTH
    body = json.dumps(
        {
            "image_base64": base64.b64encode(PNG).decode(),
            "note": "[" * 1000,
            "extra": json.loads("[" * (depth - 1) + "]" * (depth - 1)),
        }
    )
    response = api_client.post("/classify-image", body, content_type="application/json")
    assert response.status_code == 200, response.content


@pytest.mark.parametrize("value", [42, 4.2, True, None, ["http://images.test/a.png"], {"u": 1}])
def test_an_image_url_that_is_not_a_string_is_refused(api_client, tiny_model, value):
    response = api_client.post("/classify-image", {"image_url": value}, format="json")
    assert_error(response, 400, "invalid_request")


def test_an_image_url_and_base64_together_are_refused(api_client, tiny_model):
    body = {"image_url": "http://images.test/a.png", "image_base64": base64.b64encode(PNG).decode()}
    response = api_client.post("/classify-image", body, format="json")
    assert_error(response, 400, "invalid_request")


def test_an_image_url_and_an_upload_together_are_refused(api_client, tiny_model):
    response = api_client.post(
        "/classify-image",
        {"image": upload("a.png", PNG), "image_url": "http://images.test/a.png"},
        format="multipart",
    )
    assert_error(response, 400, "invalid_request")


def test_an_upload_and_base64_together_are_refused(api_client, tiny_model):
    response = api_client.post(
        "/classify-image",
        {"image": upload("a.png", PNG), "image_base64": base64.b64encode(PNG).decode()},
        format="multipart",
    )
    assert_error(response, 400, "invalid_request")


# --- Against the real server: chunked bodies have no Content-Length ----------------------------

BOUNDARY = "----intake-test-boundary"


def multipart(data: bytes) -> bytes:
    return (
        (
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="image"; filename="photo.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def chunked(body: bytes, piece: int = 32 * 1024) -> bytes:
    out = bytearray()
    for start in range(0, len(body), piece):
        part = body[start : start + piece]
        out += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    return bytes(out + b"0\r\n\r\n")


def raw_post(port: int, headers: dict[str, str], body: bytes) -> tuple[int, dict]:
    """Send a request byte for byte, then read the whole answer: (status, JSON body)."""
    head = "POST /classify-image HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head.encode() + body)
        answer = bytearray()
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    head_bytes, _, payload = bytes(answer).partition(b"\r\n\r\n")
    status = int(head_bytes.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head_bytes.lower():
        payload = _dechunk(payload)
    return status, json.loads(payload)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return bytes(out)


@pytest.mark.slow
def test_over_size_uploads_are_413_with_and_without_content_length_on_the_real_server(
    web_server, tiny_model
):
    server = web_server(workers=1, env={"IMAGE_MAX_BYTES": "100000"})
    port = int(server.url.rsplit(":", 1)[1])
    form = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    chunked_form = {**form, "Transfer-Encoding": "chunked"}

    status, answer = raw_post(port, chunked_form, chunked(multipart(PNG)))
    assert status == 200, answer  # a chunked upload within the limits is classified

    # Past the image limit, within the body buffer: the upload parser refuses it.
    status, answer = raw_post(port, chunked_form, chunked(multipart(PNG + b"\0" * 150_000)))
    assert (status, answer["error"]["code"]) == (413, "payload_too_large")

    # Past every limit, no Content-Length: refused before the body is read whole.
    status, answer = raw_post(port, chunked_form, chunked(multipart(PNG + b"\0" * 400_000)))
    assert (status, answer["error"]["code"]) == (413, "payload_too_large")

    # A Content-Length far over the limit: refused from the header, the body never read.
    big = {**form, "Content-Length": str(50_000_000)}
    status, answer = raw_post(port, big, multipart(PNG)[:1000])
    assert (status, answer["error"]["code"]) == (413, "payload_too_large")

    # JSON without Content-Length, past the limit.
    text = json.dumps({"image_base64": base64.b64encode(b"\0" * 400_000).decode()}).encode()
    json_chunked = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    status, answer = raw_post(port, json_chunked, chunked(text))
    assert (status, answer["error"]["code"]) == (413, "payload_too_large")

    # The worker still answers.
    status, answer = raw_post(port, chunked_form, chunked(multipart(PNG)))
    assert status == 200, answer
    assert server.process.poll() is None
