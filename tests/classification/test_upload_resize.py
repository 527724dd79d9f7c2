"""The upload page sends what the model needs: a camera-size photo is resized in the browser
(upright, JPEG, shorter side twice what the chosen model sees) before upload; a small photo, a
GIF or a WebP is sent as chosen. In Debian's headless Chromium, as test_upload_page.py; what
was sent is what the server received (recorded where it decodes)."""

import hashlib
import io
import math
import re
from pathlib import Path

import numpy as np
import pytest
from django.test import Client
from PIL import Image
from playwright.sync_api import Page, expect

from bench.jpeg_draft import _photo_files
from classification.serving import services as serving_services
from tests.classification import test_upload_page

# The browser, its page and the default model of the upload page's tests.
browser = test_upload_page.browser
page = test_upload_page.page
default_model = test_upload_page.default_model

pytestmark = pytest.mark.slow  # the default model, built from its wheels

CAMERA = (4032, 3024)  # a 12-MP phone photo
CAMERA_QUALITY = 92
# imagenet-lite0: input 224, central square of 0.875 of the shorter side; twice that.
LITE0_SIDE = math.ceil(2 * 224 / 0.875)
CONFIDENT = 0.3  # where the server's own answer is this sure, the resized upload must agree


@pytest.fixture
def received(monkeypatch) -> list[bytes]:
    """The image bytes the server decodes, in order (the live server runs in this process)."""
    seen: list[bytes] = []
    decode = serving_services.image_decode

    def recording(*, data: bytes, **options):  # type: ignore[no-untyped-def]
        seen.append(data)
        return decode(data=data, **options)

    monkeypatch.setattr(serving_services, "image_decode", recording)
    return seen


@pytest.fixture
def site(live_server, transactional_db, default_model) -> str:
    return f"{live_server.url}/"


def _skimage(name: str) -> Image.Image:
    from skimage import data

    return Image.fromarray(getattr(data, name)()).convert("RGB")


def _jpeg(image: Image.Image, path: Path, **options: object) -> Path:
    image.save(path, "JPEG", quality=CAMERA_QUALITY, **options)
    return path


def _camera_size(image: Image.Image, longer: int = CAMERA[0]) -> Image.Image:
    """A wheel photo upscaled (LANCZOS) to a camera's size, its aspect kept."""
    scale = longer / max(image.size)
    size = (round(image.width * scale), round(image.height * scale))
    return image.resize(size, resample=Image.Resampling.LANCZOS)


def _grainy(image: Image.Image, sigma: float = 8.0) -> Image.Image:
    """A sensor's grain on an upscaled photo (too smooth otherwise: a camera's 3-5 MB is noise)."""
    pixels = np.asarray(image, dtype=np.float32)
    noise = np.random.default_rng(6).normal(0.0, sigma, size=pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))


def _upload(page: Page, path: Path) -> dict:
    """Choose ``path`` on the page; the answer's JSON once the result shows."""
    with page.expect_response(
        lambda response: (
            response.url.endswith("/classify-image") and response.request.method == "POST"
        )
    ) as answer:
        page.get_by_label("Choose an image").set_input_files(path)
    expect(page.locator("#result")).to_be_visible()
    assert answer.value.ok, answer.value.text()
    return answer.value.json()


def _only(received: list[bytes], answer: dict) -> bytes:
    assert len(received) == 1
    assert hashlib.sha256(received[0]).hexdigest() == answer["image_sha256"]
    return received.pop()


def _shown(size: int) -> str:
    """bytes() of upload.js."""
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MB"
    return f"{round(size / 1024)} KB" if size >= 1024 else f"{size} bytes"


def test_a_12_megapixel_photo_is_sent_resized_with_both_sizes_shown(page, site, received, tmp_path):
    original = _jpeg(
        _grainy(_skimage("chelsea").resize(CAMERA, Image.Resampling.LANCZOS)), tmp_path / "cat.jpg"
    )
    assert original.stat().st_size > 3 * 1024 * 1024  # as a phone's photo
    page.goto(site)

    answer = _upload(page, original)

    sent = _only(received, answer)
    assert len(sent) <= 400 * 1024, len(sent)
    with Image.open(io.BytesIO(sent)) as image:
        assert image.format == "JPEG"
        assert min(image.size) == LITE0_SIDE
        assert image.size == (round(CAMERA[0] * LITE0_SIDE / CAMERA[1]), LITE0_SIDE)
        width, height = image.size
    expect(page.locator("#sent-size")).to_have_text(
        f"Sent {width} x {height}, {_shown(len(sent))} "
        f"(from 4032 x 3024, {_shown(original.stat().st_size)})"
    )
    expect(page.locator("#result-model")).to_have_text("Model imagenet-lite0 v1")


def test_a_photo_with_exif_orientation_6_arrives_upright(page, site, received, tmp_path):
    # Upright it is portrait; the camera stored it landscape with "rotate 90 clockwise" (6).
    upright = _camera_size(_skimage("coffee"), longer=2400).transpose(Image.Transpose.ROTATE_90)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # exif_transpose of 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    original = _jpeg(stored, tmp_path / "portrait.jpg", exif=exif.tobytes())
    assert stored.width > stored.height
    page.goto(site)

    sent = _only(received, _upload(page, original))

    with Image.open(io.BytesIO(sent)) as image:
        assert image.getexif().get(0x0112, 1) == 1
        assert image.width == LITE0_SIDE < image.height  # portrait, as the photo is seen
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    expected = np.asarray(upright.resize(image.size, Image.Resampling.LANCZOS), dtype=np.float64)
    flipped = expected[::-1, ::-1]  # what a turn the wrong way (or a half turn) would look like
    assert np.abs(pixels - expected).mean() < 6
    assert np.abs(pixels - flipped).mean() > 3 * np.abs(pixels - expected).mean()
    expect(page.locator("#sent-size")).to_contain_text(f"(from {upright.width} x {upright.height},")


@pytest.mark.parametrize(
    ("name", "make"),
    [
        # Its shorter side (400) is less than the model can use (512): nothing to save.
        ("small.jpg", lambda: _skimage("coffee")),
        # Larger than needed, but a GIF (palette, animation) or a WebP keeps its bytes.
        ("large.gif", lambda: _camera_size(_skimage("chelsea"), longer=1600)),
        ("large.webp", lambda: _camera_size(_skimage("chelsea"), longer=1600)),
    ],
)
def test_a_small_photo_a_gif_and_a_webp_are_sent_as_chosen(
    page, site, received, tmp_path, name, make
):
    original = tmp_path / name
    make().save(original, quality=CAMERA_QUALITY)
    page.goto(site)

    sent = _only(received, _upload(page, original))

    assert sent == original.read_bytes()
    expect(page.locator("#sent-size")).to_have_text(
        re.compile(rf"^Sent as chosen: (600 x 400, )?{re.escape(_shown(len(sent)))}$")
    )


def test_the_size_sent_follows_the_chosen_model(page, site, received, tmp_path, zero_shot_model):
    # The zero-shot model (promoted last, the default) sees 32 x 32 of the shorter side: 64.
    original = _jpeg(_camera_size(_skimage("astronaut"), longer=1500), tmp_path / "a.jpg")
    page.goto(site)
    choice = page.get_by_label("Model", exact=True)
    expect(choice).to_have_value("clip")

    with Image.open(io.BytesIO(_only(received, _upload(page, original)))) as image:
        assert image.size == (2 * zero_shot_model.input_size,) * 2

    choice.select_option("imagenet-lite0")
    with Image.open(io.BytesIO(_only(received, _upload(page, original)))) as image:
        assert image.size == (LITE0_SIDE, LITE0_SIDE)


def _wheel_photos() -> list[tuple[str, Image.Image]]:
    photos = []
    for name, path in _photo_files():
        with Image.open(path) as opened:
            photos.append((name, opened.convert("RGB")))
    return photos


def test_the_browser_resized_upload_agrees_with_the_server_on_the_original(
    page, site, received, tmp_path, capsys: pytest.CaptureFixture
):
    photos = _wheel_photos()
    assert len(photos) >= 8  # scikit-image's photographs at least
    api = Client()
    page.goto(site)
    rows = []
    for name, photo in photos:
        original = _jpeg(_camera_size(photo), tmp_path / f"{name}.jpg")
        with original.open("rb") as file:
            server = api.post("/classify-image", {"image": file}).json()
        browser_answer = _upload(page, original)
        received.clear()
        rows.append((name, server["classification"], server["confidence"], browser_answer))

    confident = [row for row in rows if row[2] >= CONFIDENT]
    agree = [row for row in rows if row[1] == row[3]["classification"]]
    with capsys.disabled():
        print(
            f"\ntop-1 agreement, browser-resized against the original: {len(agree)}/{len(rows)}"
            f" ({len(confident)} with server confidence >= {CONFIDENT})"
        )
        for name, label, confidence, answer in rows:
            print(f"  {name:<20} {label} ({confidence:.2f}) / {answer['classification']}")
    assert confident, "no photo the server is sure about"
    assert [(r[0], r[1]) for r in confident] == [(r[0], r[3]["classification"]) for r in confident]


# With the tiny model (32 x 32, no crop) a photo is resized to 64 px on its shorter side.
@pytest.fixture
def tiny_site(live_server, transactional_db, tiny_model) -> str:
    return f"{live_server.url}/"


def test_without_create_image_bitmap_a_large_photo_is_sent_as_chosen(
    page, tiny_site, received, tmp_path
):
    original = _jpeg(_skimage("coffee"), tmp_path / "old-browser.jpg")
    page.add_init_script("window.createImageBitmap = undefined;")  # a browser without it
    page.goto(tiny_site)

    sent = _only(received, _upload(page, original))

    assert sent == original.read_bytes()
    expect(page.locator("#sent-size")).to_have_text(f"Sent as chosen: {_shown(len(sent))}")


def test_a_jpeg_the_browser_cannot_decode_is_sent_for_the_server_to_judge(
    page, tiny_site, received, tmp_path
):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40)
    page.goto(tiny_site)

    page.get_by_label("Choose an image").set_input_files(broken)

    expect(page.locator("#intake-error")).to_contain_text("could not be read")
    assert received == [broken.read_bytes()]


def test_the_size_limit_counts_the_bytes_sent(page, tiny_site, received, tmp_path, settings):
    settings.IMAGE_MAX_BYTES = 200 * 1024
    large = _jpeg(_camera_size(_skimage("chelsea"), longer=2000), tmp_path / "large.jpg")
    assert large.stat().st_size > settings.IMAGE_MAX_BYTES
    gif = tmp_path / "large.gif"
    _camera_size(_skimage("chelsea"), longer=2000).save(gif)
    assert gif.stat().st_size > settings.IMAGE_MAX_BYTES
    page.goto(tiny_site)

    # Over the limit as chosen, far under it once resized: sent.
    with Image.open(io.BytesIO(_only(received, _upload(page, large)))) as image:
        assert min(image.size) == 64

    # A GIF is sent as chosen: over the limit, it is refused before any request.
    posted: list[str] = []
    page.on("request", lambda r: posted.append(r.url) if r.method == "POST" else None)
    page.get_by_label("Choose an image").set_input_files(gif)
    expect(page.locator("#intake-error")).to_contain_text("too large")
    expect(page.locator("#intake-error")).to_contain_text(
        f"This file is {_shown(gif.stat().st_size)}"
    )
    assert posted == []
    assert received == []
