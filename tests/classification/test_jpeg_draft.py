"""JPEG draft decoding (IMAGE_JPEG_DRAFT): only large JPEGs, only for versions that record the
margin they were validated with, never below that margin x the need."""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from classification.exceptions import TooManyPixels
from classification.serving import services
from classification.serving.imaging import (
    DRAFT_MARGIN_OPTION,
    JPEG_DRAFT_MARGIN,
    image_decode,
    image_preprocess,
    jpeg_draft_margin,
    jpeg_draft_size,
)
from tests.support.images import encode, image_bytes

ROOT = Path(__file__).resolve().parents[2]
MAX_PIXELS = 40_000_000
MARGIN = {DRAFT_MARGIN_OPTION: JPEG_DRAFT_MARGIN}  # what a validated version records
CROP = {"crop": 0.875, **MARGIN}


def gradient_jpeg(size: tuple[int, int], **save_options: object) -> bytes:
    """A smooth colour gradient (a photo-like JPEG that decodes the same at any scale)."""
    width, height = size
    red = np.broadcast_to((np.arange(width) * 255 // width).astype(np.uint8), (height, width))
    green = np.broadcast_to(
        (np.arange(height) * 255 // height).astype(np.uint8)[:, np.newaxis], (height, width)
    )
    pixels = np.stack([red, green, red // 2 + green // 2], axis=-1)
    return encode(Image.fromarray(pixels), "JPEG", quality=90, **save_options)


@pytest.fixture
def draft_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Every draft() call on any image (JPEG's own and the no-op of other formats)."""
    calls: list[tuple] = []
    for cls in (Image.Image, JpegImagePlugin.JpegImageFile):
        original = cls.draft

        def spy(self, mode, size, _original=original):
            calls.append((self.format, mode, size))
            return _original(self, mode, size)

        monkeypatch.setattr(cls, "draft", spy)
    return calls


def test_a_large_jpeg_decodes_reduced_and_reports_its_own_size():
    decoded = image_decode(
        data=gradient_jpeg((2048, 1536)),
        max_pixels=MAX_PIXELS,
        input_size=224,
        preprocessing=MARGIN,
    )
    # Twice 224 is 448 a side: 1536 holds it three times, so draft halves the image.
    assert decoded.draft_scale == 2
    assert decoded.image.size == (1024, 768)
    assert (decoded.width, decoded.height) == (2048, 1536)
    assert decoded.format == "JPEG"


def test_without_an_input_size_nothing_is_drafted(draft_calls):
    decoded = image_decode(data=gradient_jpeg((2048, 1536)), max_pixels=MAX_PIXELS)
    assert decoded.image.size == (2048, 1536)
    assert decoded.draft_scale == 1
    assert draft_calls == []


@pytest.mark.parametrize(
    "preprocessing",
    [None, {"crop": 0.875}, {DRAFT_MARGIN_OPTION: None}, {"resample": "bicubic", "crop": 0.5}],
)
def test_a_version_without_a_recorded_margin_decodes_a_large_jpeg_whole(preprocessing, draft_calls):
    decoded = image_decode(
        data=gradient_jpeg((4032, 3024)),
        max_pixels=MAX_PIXELS,
        input_size=224,
        preprocessing=preprocessing,
    )
    assert decoded.image.size == (4032, 3024)
    assert decoded.draft_scale == 1
    assert draft_calls == []


@pytest.mark.parametrize(
    ("margin", "scale"),
    # 4032 x 3024, input 224, crop 0.875: the need is margin x 256 on the shorter side.
    [(1, 8), (1.5, 4), (2, 4), (3, 2), (6, 1)],
)
def test_the_margin_used_is_the_one_the_version_records(margin, scale):
    preprocessing = {"crop": 0.875, DRAFT_MARGIN_OPTION: margin}
    decoded = image_decode(
        data=gradient_jpeg((4032, 3024)),
        max_pixels=MAX_PIXELS,
        input_size=224,
        preprocessing=preprocessing,
    )
    assert decoded.draft_scale == scale
    assert decoded.image.size == (4032 // scale, 3024 // scale)
    assert min(decoded.image.size) * 0.875 >= margin * 224


@pytest.mark.parametrize("recorded", [0.5, 0, -2, "two", True, float("nan"), [2]])
def test_a_margin_that_is_no_number_of_at_least_one_means_no_draft(recorded):
    assert jpeg_draft_margin({DRAFT_MARGIN_OPTION: recorded}) is None
    assert (
        jpeg_draft_size(
            width=4032, height=3024, input_size=224, preprocessing={DRAFT_MARGIN_OPTION: recorded}
        )
        is None
    )


@pytest.mark.parametrize(
    ("size", "input_size", "preprocessing"),
    [
        ((4000, 3000), 224, CROP),
        ((3000, 4000), 224, CROP),
        ((4000, 3000), 160, MARGIN),
        ((5000, 900), 160, MARGIN),
        ((2600, 2600), 224, {"resize": "shorter_side", "resample": "bicubic", **MARGIN}),
        ((1800, 1800), 224, CROP),
        ((6000, 2400), 64, {"crop": 0.5, **MARGIN}),
    ],
)
def test_draft_keeps_twice_the_input_size_in_the_region_the_model_sees(
    size, input_size, preprocessing
):
    decoded = image_decode(
        data=gradient_jpeg(size),
        max_pixels=MAX_PIXELS,
        input_size=input_size,
        preprocessing=preprocessing,
    )
    crop = (preprocessing or {}).get("crop", 1.0)
    seen = [round(side * crop) for side in decoded.image.size]
    assert decoded.draft_scale > 1
    assert min(seen) >= JPEG_DRAFT_MARGIN * input_size
    # And reduced as far as that allows: draft's next reduction would go below the need.
    if decoded.draft_scale < 8:
        needed = math.ceil(JPEG_DRAFT_MARGIN * input_size / crop)
        assert min(size) // (2 * decoded.draft_scale) < needed
    batch = image_preprocess(
        image=decoded.image, input_size=input_size, preprocessing=preprocessing
    )
    assert batch.shape == (1, input_size, input_size, 3)


@pytest.mark.parametrize(("input_size", "preprocessing"), [(224, CROP), (160, MARGIN)])
def test_an_image_under_twice_the_need_is_decoded_whole(input_size, preprocessing, draft_calls):
    crop = (preprocessing or {}).get("crop", 1.0)
    needed = math.ceil(JPEG_DRAFT_MARGIN * input_size / crop)
    size = (3 * needed, 2 * needed - 1)  # halved, the shorter side would fall below the need
    assert (
        jpeg_draft_size(
            width=size[0], height=size[1], input_size=input_size, preprocessing=preprocessing
        )
        is None
    )
    decoded = image_decode(
        data=gradient_jpeg(size),
        max_pixels=MAX_PIXELS,
        input_size=input_size,
        preprocessing=preprocessing,
    )
    assert decoded.image.size == size
    assert decoded.draft_scale == 1
    assert draft_calls == []
    # One pixel more on the shorter side and draft halves it.
    assert jpeg_draft_size(
        width=size[0], height=size[1] + 1, input_size=input_size, preprocessing=preprocessing
    ) == (needed, needed)


@pytest.mark.parametrize("format", ["PNG", "WEBP", "GIF"])
def test_other_formats_are_never_drafted(format, draft_calls):
    data = image_bytes(format=format, size=(2400, 1800))
    decoded = image_decode(data=data, max_pixels=MAX_PIXELS, input_size=64, preprocessing=MARGIN)
    assert decoded.format == format
    assert decoded.image.size == (2400, 1800)
    assert decoded.draft_scale == 1
    assert draft_calls == []


def test_a_grey_jpeg_stays_grey():
    data = image_bytes(format="JPEG", size=(2048, 2048), mode="L", color=90)
    decoded = image_decode(data=data, max_pixels=MAX_PIXELS, input_size=224, preprocessing=MARGIN)
    assert decoded.draft_scale == 4  # 2048 holds 448 (twice 224) four times
    assert decoded.image.mode == "L"
    batch = image_preprocess(image=decoded.image, input_size=224)
    assert np.allclose(batch, 90 / 127.5 - 1.0, atol=0.02)


@pytest.mark.parametrize(("orientation", "red_at_top"), [(6, True), (8, False)])
def test_an_exif_rotated_jpeg_comes_out_upright(orientation, red_at_top):
    # Stored 2400 x 1800: left half red, right half blue; 6 turns it clockwise to view, 8 the
    # other way, so the image the model sees is 1800 x 2400 with the red half on top (6).
    pixels = np.zeros((1800, 2400, 3), dtype=np.uint8)
    pixels[:, :1200] = [255, 0, 0]
    pixels[:, 1200:] = [0, 0, 255]
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(Image.fromarray(pixels), "JPEG", quality=90, exif=exif)

    drafted = image_decode(data=data, max_pixels=MAX_PIXELS, input_size=224, preprocessing=CROP)
    whole = image_decode(data=data, max_pixels=MAX_PIXELS)

    assert drafted.draft_scale == 2
    assert drafted.image.size == (1200, 900)
    assert (drafted.width, drafted.height) == (whole.width, whole.height) == (2400, 1800)
    batch = image_preprocess(image=drafted.image, input_size=224, preprocessing=CROP)[0]
    top, bottom = batch[10, 112], batch[213, 112]
    red, blue = (top, bottom) if red_at_top else (bottom, top)
    assert red[0] > 0.9 and red[2] < -0.9
    assert blue[2] > 0.9 and blue[0] < -0.9
    reference = image_preprocess(image=whole.image, input_size=224, preprocessing=CROP)[0]
    # The same picture: only the edge between the halves may differ by more than JPEG noise.
    assert np.median(np.abs(batch - reference)) < 0.02


def test_the_pixel_limit_sees_the_full_size_and_the_budget_what_is_decoded():
    data = gradient_jpeg((2048, 1536))
    seen: list[int] = []
    decoded = image_decode(
        data=data,
        max_pixels=MAX_PIXELS,
        input_size=224,
        preprocessing=MARGIN,
        before_decode=seen.append,
    )
    assert decoded.draft_scale == 2
    # The budget holds what the decode takes in memory: a quarter of the pixels.
    assert seen == [1024 * 768] == [decoded.image.size[0] * decoded.image.size[1]]
    # Drafted it is 786,432 pixels, but the limit counts the image's own.
    with pytest.raises(TooManyPixels):
        image_decode(data=data, max_pixels=1_000_000, input_size=224, preprocessing=MARGIN)


class StubModel:
    """The parts of a ServingModel that classifying uses: a constant answer, no interpreter."""

    name, version, labels = "stub", 1, ["a", "b"]
    input_size = 32

    def __init__(self, **preprocessing: object) -> None:
        self.preprocessing = {"resample": "bilinear", "scale": [-1.0, 1.0], **preprocessing}

    def heads(self, batch):
        assert batch.shape == (1, 32, 32, 3)
        return np.array([0.75, 0.25], dtype=np.float32), None


def classify_stub(model: StubModel, size: tuple[int, int]) -> dict:
    result = services.serving_model_classify(
        model=model,  # type: ignore[arg-type]
        image_bytes=gradient_jpeg(size),
        top_k=1,
    )
    return result.input_stats


PRINT_SETTING = "from django.conf import settings; print(settings.IMAGE_JPEG_DRAFT)"


@pytest.mark.parametrize(("value", "expected"), [(None, "True"), ("0", "False")])
def test_the_setting_is_on_by_default_and_0_turns_it_off(value, expected):
    environment = {k: v for k, v in os.environ.items() if k != "IMAGE_JPEG_DRAFT"}
    if value is not None:
        environment["IMAGE_JPEG_DRAFT"] = value
    environment["DJANGO_SETTINGS_MODULE"] = "classifier_site.settings"
    shown = subprocess.run(
        [sys.executable, "-c", PRINT_SETTING],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert shown.stdout.strip() == expected


@pytest.mark.parametrize("setting", [True, False])
def test_the_setting_turns_draft_on_and_off_in_classification(settings, setting, draft_calls):
    settings.IMAGE_JPEG_DRAFT = setting
    stats = classify_stub(StubModel(**{DRAFT_MARGIN_OPTION: 2}), (1000, 600))
    assert (stats["width"], stats["height"]) == (1000, 600)
    # 64 pixels needed: 600 holds them 9 times, so draft reduces by 8.
    expected = [("JPEG", "RGB", (64, 64))] if setting else []
    assert draft_calls == expected


@pytest.mark.parametrize(("margin", "asked"), [(1, (32, 32)), (1.5, (48, 48)), (3, (96, 96))])
def test_classification_drafts_with_the_versions_own_margin(settings, margin, asked, draft_calls):
    settings.IMAGE_JPEG_DRAFT = True
    classify_stub(StubModel(**{DRAFT_MARGIN_OPTION: margin}), (1000, 600))
    assert draft_calls == [("JPEG", "RGB", asked)]


def test_classification_decodes_whole_for_a_version_without_a_margin(settings, draft_calls):
    settings.IMAGE_JPEG_DRAFT = True
    stats = classify_stub(StubModel(), (4032, 3024))
    assert (stats["width"], stats["height"]) == (4032, 3024)
    assert draft_calls == []
