"""The preprocessing contract (docs/models.md), pixel by pixel."""

import io

import numpy as np
import pytest
from PIL import Image

from classification.exceptions import (
    EmptyImage,
    TooManyPixels,
    UndecodableImage,
    UnsupportedImageType,
)
from classification.serving.imaging import image_decode, image_preprocess
from tests.support.images import encode, image_bytes

MAX_PIXELS = 40_000_000


def preprocess_bytes(data: bytes, size: int = 4) -> np.ndarray:
    decoded = image_decode(data=data, max_pixels=MAX_PIXELS)
    return image_preprocess(image=decoded.image, input_size=size)


def test_scaling_maps_0_to_minus_one_and_255_to_one_exactly():
    pixels = np.array([[[0, 255, 51]]], dtype=np.uint8).repeat(4, 0).repeat(4, 1)
    batch = preprocess_bytes(encode(Image.fromarray(pixels)))
    assert batch.dtype == np.float32
    assert batch.shape == (1, 4, 4, 3)
    assert batch[0, 0, 0, 0] == -1.0
    assert batch[0, 0, 0, 1] == 1.0
    assert batch[0, 0, 0, 2] == pytest.approx(51 / 127.5 - 1.0, abs=1e-7)


def test_midpoint_127_and_128_straddle_zero():
    pixels = np.full((4, 4, 3), [127, 128, 0], dtype=np.uint8)
    batch = preprocess_bytes(encode(Image.fromarray(pixels)))
    assert batch[0, 0, 0, 0] == pytest.approx(-0.5 / 127.5, abs=1e-6)
    assert batch[0, 0, 0, 1] == pytest.approx(0.5 / 127.5, abs=1e-6)


def test_resizes_to_square_input_regardless_of_aspect_ratio():
    batch = preprocess_bytes(image_bytes(format="PNG", size=(300, 20)), size=32)
    assert batch.shape == (1, 32, 32, 3)


def test_crop_keeps_the_central_fraction_of_each_side_before_resizing():
    # 16 x 8: a 2-pixel red frame left and right, 1-pixel frame top and bottom, blue inside.
    pixels = np.zeros((8, 16, 3), dtype=np.uint8)
    pixels[...] = (255, 0, 0)
    pixels[1:7, 2:14] = (0, 0, 255)
    image = Image.fromarray(pixels)

    cropped = image_preprocess(image=image, input_size=12, preprocessing={"crop": 0.75})
    whole = image_preprocess(image=image, input_size=12)

    # 0.75 keeps the central 12 x 6: all blue, resized to 12 x 12 without a red pixel left.
    assert (cropped[0, ..., 0] == -1.0).all() and (cropped[0, ..., 2] == 1.0).all()
    assert (whole[0, ..., 0] > 0).any()


def test_no_crop_unless_asked():
    image = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    full = image_preprocess(image=image, input_size=4, preprocessing={"crop": 1.0})
    assert np.array_equal(full, image_preprocess(image=image, input_size=4))


@pytest.mark.parametrize("crop", [0.0, -0.5, 1.5])
def test_crop_outside_zero_to_one_is_refused(crop):
    image = Image.new("RGB", (4, 4))
    with pytest.raises(ValueError, match="crop"):
        image_preprocess(image=image, input_size=4, preprocessing={"crop": crop})


@pytest.mark.parametrize("format", ["JPEG", "PNG", "GIF", "WEBP"])
def test_each_accepted_format_decodes(format):
    data = image_bytes(format=format, size=(10, 10), color=(255, 0, 0))
    decoded = image_decode(data=data, max_pixels=MAX_PIXELS)
    assert decoded.format == format
    batch = image_preprocess(image=decoded.image, input_size=10)
    red = batch[0, 5, 5]
    assert red[0] > 0.9 and red[1] < -0.8 and red[2] < -0.8


def test_alpha_is_dropped_not_composited_onto_black():
    # A fully transparent red pixel stays red: the alpha channel is simply removed.
    data = image_bytes(format="PNG", size=(4, 4), mode="RGBA", color=(255, 0, 0, 0))
    batch = preprocess_bytes(data)
    np.testing.assert_array_equal(batch[0, 0, 0], [1.0, -1.0, -1.0])


def test_palette_with_transparency_becomes_rgb():
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    data = encode(image, "PNG", transparency=0)
    np.testing.assert_array_equal(preprocess_bytes(data)[0, 0, 0], [-1.0, 1.0, -1.0])


def test_exif_orientation_is_applied():
    # Left half red, right half blue; orientation 6 means "rotate 90 degrees clockwise to view".
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = [255, 0, 0]
    pixels[:, 20:] = [0, 0, 255]
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.fromarray(pixels), "PNG", exif=exif)
    decoded = image_decode(data=data, max_pixels=MAX_PIXELS)
    batch = image_preprocess(image=decoded.image, input_size=40)
    # After rotating clockwise the red half is on top.
    assert batch[0, 2, 20, 0] > 0.9 and batch[0, 2, 20, 2] < -0.9
    assert batch[0, 37, 20, 2] > 0.9 and batch[0, 37, 20, 0] < -0.9


def test_malformed_exif_falls_back_to_stored_pixels():
    exif = Image.Exif()
    exif[0x0112] = 99  # not an orientation
    data = encode(Image.new("RGB", (8, 4), (0, 255, 0)), "PNG", exif=exif)
    batch = preprocess_bytes(data, size=8)
    np.testing.assert_array_equal(batch[0, 0, 0], [-1.0, 1.0, -1.0])


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (8, 8), color) for color in [(255, 0, 0), (0, 0, 255)]]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50)
    batch = preprocess_bytes(buffer.getvalue(), size=8)
    assert batch[0, 4, 4, 0] > 0.9 and batch[0, 4, 4, 2] < -0.9


def test_sixteen_bit_ramp_keeps_its_shades():
    ramp = np.linspace(0, 65535, 256, dtype=np.uint16).reshape(1, 256).repeat(4, 0)
    data = encode(Image.fromarray(ramp), "PNG")
    batch = preprocess_bytes(data, size=256)
    greys = batch[0, 0, :, 0]
    assert greys[0] == -1.0 and greys[-1] == 1.0
    assert greys[128] == pytest.approx(0.0, abs=0.02)  # mid-grey, not white


@pytest.mark.parametrize(
    "mode,color", [("CMYK", (0, 255, 255, 0)), ("L", 255), ("1", 1), ("LA", (255, 0))]
)
def test_other_modes_become_rgb(mode, color):
    format = "JPEG" if mode == "CMYK" else "PNG"
    batch = preprocess_bytes(image_bytes(format=format, size=(4, 4), mode=mode, color=color))
    assert batch.shape == (1, 4, 4, 3)
    assert batch[0, 0, 0, 0] > 0.9  # white, or red for CMYK's (0, 255, 255, 0)


def test_empty_bytes_are_refused():
    with pytest.raises(EmptyImage):
        image_decode(data=b"", max_pixels=MAX_PIXELS)


@pytest.mark.parametrize(
    "data",
    [b"hello, this is text", b"<html><body>not an image</body></html>"],
)
def test_non_images_are_unsupported(data):
    with pytest.raises(UnsupportedImageType):
        image_decode(data=data, max_pixels=MAX_PIXELS)


def test_formats_outside_the_allowlist_are_unsupported():
    with pytest.raises(UnsupportedImageType):
        image_decode(data=image_bytes(format="TIFF"), max_pixels=MAX_PIXELS)
    with pytest.raises(UnsupportedImageType):
        image_decode(data=image_bytes(format="BMP"), max_pixels=MAX_PIXELS)


def test_truncated_jpeg_is_undecodable():
    data = image_bytes(format="JPEG", size=(200, 200))
    with pytest.raises(UndecodableImage):
        image_decode(data=data[: len(data) // 2], max_pixels=MAX_PIXELS)


def test_pixel_limit_is_checked_before_decoding():
    data = image_bytes(format="PNG", size=(200, 100))
    with pytest.raises(TooManyPixels):
        image_decode(data=data, max_pixels=200 * 100 - 1)
    assert image_decode(data=data, max_pixels=200 * 100).width == 200


def test_shorter_side_resize_keeps_the_aspect_and_takes_the_central_square():
    from PIL import Image

    from classification.serving.imaging import image_preprocess

    # 40 x 20: left half red, right half blue, a green column in the middle 20 pixels.
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = (255, 0, 0)
    pixels[:, 20:] = (0, 0, 255)
    pixels[:, 10:30, 1] = 255
    options = {"resample": "nearest", "resize": "shorter_side", "scale": [0.0, 1.0]}
    batch = image_preprocess(image=Image.fromarray(pixels), input_size=10, preprocessing=options)
    assert batch.shape == (1, 10, 10, 3)
    assert (batch[0, :, :, 1] == 1.0).all()  # only the central, green-lit square is kept


def test_mean_and_std_standardise_each_channel_after_scaling():
    from PIL import Image

    from classification.registry.clip import CLIP_MEAN, CLIP_PREPROCESSING, CLIP_STD
    from classification.serving.imaging import image_preprocess

    image = Image.new("RGB", (8, 8), (255, 0, 128))
    batch = image_preprocess(image=image, input_size=8, preprocessing=CLIP_PREPROCESSING)
    expected = (np.array([255, 0, 128]) / 255.0 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    np.testing.assert_allclose(batch[0, 3, 3], expected, rtol=1e-5)
