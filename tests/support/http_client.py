"""A small HTTP client for tests against a real server: every answer, errors included."""

import contextlib
import json
import socket
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from email.message import Message

from tests.support.images import encode, noise_image


@dataclass
class Answer:
    status: int
    headers: Message  # names in any case (HTTP/1.1 names are case-insensitive)
    body: bytes
    seconds: float

    def json(self) -> dict:
        return json.loads(self.body)


def send(
    url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None, timeout=30.0
) -> Answer:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body, status, got = response.read(), response.status, response.headers
    except urllib.error.HTTPError as error:
        body, status, got = error.read(), error.code, error.headers
    return Answer(status, got, body, time.perf_counter() - started)


def upload_body(image: bytes) -> tuple[bytes, dict[str, str]]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def upload(base_url: str, *, seed: int = 0, image: bytes | None = None, **headers) -> Answer:
    image = image if image is not None else encode(noise_image(size=(32, 32), seed=seed), "PNG")
    body, content_type = upload_body(image)
    return send(f"{base_url}/classify-image", data=body, headers={**content_type, **headers})


def classify_url(base_url: str, image_url: str, **headers) -> Answer:
    body = json.dumps({"image_url": image_url}).encode()
    headers = {"Content-Type": "application/json", **headers}
    return send(f"{base_url}/classify-image", data=body, headers=headers)


def raw_chunked_post(base_url: str, body: bytes, content_type: str) -> tuple[int, dict, bytes]:
    """POST ``body`` chunked (no Content-Length): (status, headers, body) of the answer."""
    host, port = base_url.removeprefix("http://").split(":")
    head = (
        f"POST /classify-image HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
        f"Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunks = bytearray()
    for start in range(0, len(body), 32 * 1024):
        part = body[start : start + 32 * 1024]
        chunks += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    chunks += b"0\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head.encode() + bytes(chunks))
        answer = bytearray()
        with contextlib.suppress(ConnectionResetError):
            while piece := sock.recv(65536):
                answer += piece
    head_bytes, _, payload = bytes(answer).partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, payload
