"""The bad-image corpus through upload, base64 and URL alike: the exact answer, never a 500,
and the worker still answers afterwards."""

import contextlib
import io

import pytest
from PIL import GifImagePlugin, Image

from classification.serving.imaging import image_decode
from tests.support.hostile_images import (
    CORPUS,
    eps_file,
    gif_whose_later_frame_enlarges_the_canvas,
    gif_with_frames,
    psd_header,
)
from tests.support.images import image_bytes

pytestmark = pytest.mark.django_db

TRANSPORTS = ["upload", "base64", "url"]


@pytest.fixture
def send(classify, image_server):
    """send(transport, data): the same bytes as an upload, as base64 or served at a URL."""

    def post(transport: str, data: bytes):
        if transport == "upload":
            return classify(upload=data)
        if transport == "base64":
            return classify(base64_bytes=data)
        image_server.route("/corpus.jpg", body=data, headers={"Content-Type": "image/jpeg"})
        return classify(image_url=f"{image_server.base}/corpus.jpg")

    return post


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", CORPUS, ids=[case.name for case in CORPUS])
def test_each_hostile_image_gets_its_answer_and_the_worker_still_answers(send, case, transport):
    response = send(transport, case.make())
    assert response.status_code == case.status, response.content
    if case.code is None:
        assert response.json()["model"]["name"] == "tiny"
    else:
        assert response.json()["error"]["code"] == case.code
    healthy = send(transport, image_bytes(format="PNG", size=(8, 8)))
    assert healthy.status_code == 200


# --- Foreign formats never reach their plugins ----------------------------------------------

FOREIGN = {
    "TIFF": lambda: image_bytes(format="TIFF", size=(4, 4)),
    "PSD": psd_header,
    "EPS": eps_file,
    "ICO": lambda: image_bytes(format="ICO", size=(16, 16)),
}


@pytest.fixture
def plugin_calls(monkeypatch) -> list[str]:
    """Records every call of the TIFF, PSD, EPS and ICO plugins' accept and open functions."""
    Image.init()
    calls: list[str] = []
    for format_name in FOREIGN:
        factory, accept = Image.OPEN[format_name]

        def spy_factory(*args, _real=factory, _name=format_name, **kwargs):
            calls.append(f"{_name} open")
            return _real(*args, **kwargs)

        def spy_accept(prefix, _real=accept, _name=format_name):
            calls.append(f"{_name} accept")
            return _real(prefix) if _real else True

        monkeypatch.setitem(Image.OPEN, format_name, (spy_factory, spy_accept))
    return calls


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("format_name", list(FOREIGN))
def test_foreign_formats_are_refused_without_their_plugins_running(
    send, plugin_calls, format_name, transport
):
    response = send(transport, FOREIGN[format_name]())
    assert response.status_code == 415, response.content
    assert response.json()["error"]["code"] == "unsupported_image_type"
    assert plugin_calls == []


@pytest.mark.parametrize("format_name", list(FOREIGN))
def test_the_plugin_spy_sees_a_plugin_that_does_run(plugin_calls, format_name):
    # Control: Pillow without an allowlist does consult the plugin, and the spy records it.
    with contextlib.suppress(Exception):  # some of these files are only headers
        Image.open(io.BytesIO(FOREIGN[format_name]())).load()
    assert f"{format_name} accept" in plugin_calls


# --- Animated images: the first frame only --------------------------------------------------


@pytest.fixture
def gif_frames_sought(monkeypatch) -> list[int]:
    frames: list[int] = []
    real_seek = GifImagePlugin.GifImageFile._seek

    def spy_seek(self, frame, update_image=True):
        frames.append(frame)
        return real_seek(self, frame, update_image)

    monkeypatch.setattr(GifImagePlugin.GifImageFile, "_seek", spy_seek)
    return frames


def test_a_10000_frame_gif_is_answered_from_its_first_frame_alone(send, gif_frames_sought):
    response = send("upload", gif_with_frames(10_000))
    assert response.status_code == 200, response.content
    assert gif_frames_sought == [0]


def test_the_frame_spy_sees_a_walk_through_the_frames(gif_frames_sought):
    # Control: counting frames does walk them, and the spy records it.
    assert Image.open(io.BytesIO(gif_with_frames(10_000))).n_frames == 10_000
    assert max(gif_frames_sought) >= 9_999


def test_a_later_frame_that_enlarges_the_canvas_is_never_read(gif_frames_sought):
    decoded = image_decode(data=gif_whose_later_frame_enlarges_the_canvas(), max_pixels=10**6)
    assert (decoded.width, decoded.height) == (4, 4)
    assert decoded.image.convert("RGB").getpixel((1, 1)) == (0, 255, 0)  # the first frame
    assert gif_frames_sought == [0]


def test_a_10000_frame_gif_decodes_to_its_first_frames_pixels():
    # The frames after the first are never decoded, however many there are.
    decoded = image_decode(data=gif_with_frames(10_000), max_pixels=10**6)
    assert decoded.image.convert("RGB").getpixel((0, 0)) == (255, 0, 0)


def test_pillows_bomb_warning_is_an_error_even_below_our_own_limit(settings, classify):
    # 10,000 x 10,000 is past Pillow's warning threshold (89.5 megapixels) but under its error
    # threshold; with our limit raised above it, only the warning-as-error can refuse it.
    from tests.support.hostile_images import png_claiming_size

    settings.IMAGE_MAX_PIXELS = 150_000_000
    response = classify(upload=png_claiming_size(10_000, 10_000))
    assert response.status_code == 413, response.content
    assert response.json()["error"]["code"] == "image_too_many_pixels"
