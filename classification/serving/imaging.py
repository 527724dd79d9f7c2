"""Decode, validate and preprocess images: the preprocessing contract of the models.

Only JPEG, PNG, GIF and WebP are opened, so no other Pillow plugin ever parses client bytes.
The pixel limit is checked from the header, before any pixel is decoded.

JPEG draft decoding is decided per version, by its recorded preprocessing: a version whose
``jpeg_draft_margin`` passed ``evaluate_model --draft`` on labelled camera-size photos decodes
a large JPEG reduced; any other decodes it whole. The margin belongs to the version's recipe, so
a changed recipe is a new version (``fetch_model --if-missing``), never an edited one, and what
a version answered is reproducible from what it records. IMAGE_JPEG_DRAFT (on by default) is
only the global switch: off, every version decodes whole.
"""

import io
import logging
import math
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from classification.exceptions import (
    EmptyImage,
    TooManyPixels,
    UndecodableImage,
    UnsupportedImageType,
)

logger = logging.getLogger(__name__)

ACCEPTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP")

# Leading bytes of the accepted formats: bytes that start like one of them but fail to open are
# a broken image (422); anything else is not an image we accept (415).
_SIGNATURES = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",  # PNG
    b"GIF87a",
    b"GIF89a",
)

_RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}

DEFAULT_PREPROCESSING = {"resample": "bilinear", "scale": [-1.0, 1.0]}

# "square": stretched to the input square; "shorter_side": aspect kept, the shorter side
# resized to the input size, then the central square; "central_square": the central square of
# ``crop`` x the shorter side cut first, then resized (EfficientNet's own evaluation).
RESIZE_MODES = ("square", "shorter_side", "central_square")


def _looks_like_accepted_format(data: bytes) -> bool:
    if data.startswith(_SIGNATURES):
        return True
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP"


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # first frame, fully decoded (reduced by draft_scale)
    format: str
    width: int  # the image's own size, from the header, whatever draft_scale is
    height: int
    draft_scale: int = 1  # 2, 4 or 8: a JPEG decoded at that fraction of its size (draft)


# A version's preprocessing may record ``jpeg_draft_margin``: the margin its draft decoding
# was validated with on labelled camera-size photos (docs/performance.md). A JPEG is then
# decoded reduced only so far that the region the model sees keeps at least that many times the
# model's input size on its shorter side. Without it (models nobody validated: user-registered
# ones, the garment model, zero-shot CLIP), a JPEG is always decoded whole.
DRAFT_MARGIN_OPTION = "jpeg_draft_margin"
# The margin the offline ImageNet recipe records (imagenet-lite0; not its int8 version).
JPEG_DRAFT_MARGIN = 2.0


def jpeg_draft_margin(preprocessing: dict | None) -> float | None:
    """The draft margin ``preprocessing`` records, or None: this version decodes JPEGs whole."""
    margin = (preprocessing or {}).get(DRAFT_MARGIN_OPTION)
    if margin is None or isinstance(margin, bool):
        return None
    try:
        value = float(margin)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value >= 1.0 else None


def jpeg_draft_size(
    *, width: int, height: int, input_size: int, preprocessing: dict | None = None
) -> tuple[int, int] | None:
    """The size to ask a ``width`` x ``height`` JPEG's draft() for, or None: decode it whole.

    Only a version whose ``preprocessing`` records a ``jpeg_draft_margin`` (at least 1) is
    drafted: the central ``crop`` fraction the model sees (``image_preprocess``) must keep at
    least that margin x ``input_size`` pixels on its shorter side; square, shorter-side and
    central-square resizes all need no more (the last keeps ``crop`` x the shorter side).
    draft() only reduces by 2, 4 or 8 and keeps every side at least the size asked, so an image
    less than twice that size is never reduced. The size asked is a square: the same before and
    after an EXIF rotation, which happens after decoding.
    """
    margin = jpeg_draft_margin(preprocessing)
    if margin is None:
        return None
    options = {**DEFAULT_PREPROCESSING, **(preprocessing or {})}
    try:
        crop = float(options.get("crop", 1.0))
    except (TypeError, ValueError):
        return None  # image_preprocess refuses it
    if not 0.0 < crop <= 1.0 or input_size < 1:
        return None
    needed = math.ceil(margin * input_size / crop)
    if min(width, height) < 2 * needed:
        return None
    return needed, needed


# warnings.catch_warnings changes process-wide state: the lock keeps our own uses from
# interleaving. Should another thread's catch_warnings still interleave, the worst case is a
# bomb warning that only warns, and IMAGE_MAX_PIXELS (checked right after) is stricter anyway.
_WARNINGS_LOCK = threading.Lock()


def _open_bomb_checked(data: bytes) -> Image.Image:
    """Image.open restricted to the accepted formats, Pillow's bomb warning raised as an error.

    Only the header (and, for GIF, the first frame's descriptor) is read here; that is where
    Pillow checks sizes, so the lock is held for microseconds, never while pixels decode.
    """
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)


def image_decode(
    *,
    data: bytes,
    max_pixels: int,
    before_decode: Callable[[int], object] | None = None,
    input_size: int | None = None,
    preprocessing: dict | None = None,
) -> DecodedImage:
    """Open ``data`` as one of the accepted formats and decode its first frame.

    ``before_decode`` is called with the count of pixels to decode once the header passed the
    checks and before any pixel is decoded (the decode budget waits there); what it raises is
    raised. For a JPEG decoded reduced that is the reduced size, the memory it takes; the
    ``max_pixels`` check counts the header's full size either way.
    With ``input_size`` (the model's) and a ``preprocessing`` that records a draft margin, a
    JPEG large enough is decoded reduced by 2, 4 or 8 in the DCT domain (Pillow's draft; see
    ``jpeg_draft_size``); the result's width and height stay the image's own.
    Raises EmptyImage, UnsupportedImageType (not an accepted format), TooManyPixels (checked from
    the header, before decoding) or UndecodableImage (truncated or corrupt).
    """
    if not data:
        raise EmptyImage()
    try:
        image = _open_bomb_checked(data)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise TooManyPixels() from exc
    except UnidentifiedImageError as exc:
        if _looks_like_accepted_format(data):
            raise UndecodableImage() from exc
        raise UnsupportedImageType() from exc
    except Exception as exc:  # Pillow raises many types for hostile headers
        raise UndecodableImage() from exc

    width, height = image.size
    if width < 1 or height < 1:
        raise UndecodableImage("The image has no pixels.")
    if width * height > max_pixels:
        raise TooManyPixels(
            f"The image has {width * height:,} pixels; this service accepts at most {max_pixels:,}."
        )
    draft_scale = 1
    try:
        # Animated images: the first frame only. Opening read frame 0's header; seek(0) is then
        # a no-op and load() decodes that frame alone (tests spy on the GIF plugin to prove it).
        image.seek(0)
        if input_size is not None and isinstance(image, JpegImagePlugin.JpegImageFile):
            draft_scale = _jpeg_drafted(image, input_size=input_size, preprocessing=preprocessing)
    except Exception as exc:
        raise UndecodableImage() from exc
    if before_decode is not None:
        before_decode(image.size[0] * image.size[1])  # after draft(): the pixels to decode
    try:
        image.load()
    except Exception as exc:
        raise UndecodableImage() from exc
    return DecodedImage(
        image=image,
        format=image.format or "",
        width=width,
        height=height,
        draft_scale=draft_scale,
    )


def _jpeg_drafted(
    image: JpegImagePlugin.JpegImageFile, *, input_size: int, preprocessing: dict | None
) -> int:
    """Set ``image`` (not loaded yet) to decode reduced if it is large enough; the scale."""
    width, height = image.size
    size = jpeg_draft_size(
        width=width, height=height, input_size=input_size, preprocessing=preprocessing
    )
    if size is None:
        return 1
    drafted = image.draft("RGB", size)  # "RGB" keeps the mode: greys stay L, CMYK stays CMYK
    if drafted is None:
        return 1
    return round(width / drafted[1][2])


_EXIF_ORIENTATION = 0x0112


def _exif_transposed(image: Image.Image) -> Image.Image:
    try:
        if image.getexif().get(_EXIF_ORIENTATION, 1) == 1:
            return image  # nothing to turn: skip exif_transpose's copy of every pixel
        return ImageOps.exif_transpose(image)
    except Exception:  # malformed EXIF: keep the pixels as stored
        logger.debug("Ignoring malformed EXIF orientation", exc_info=True)
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any decoded mode to 8-bit RGB, dropping alpha without darkening or whitening."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # Wide integer greys: scale to 8 bits instead of clipping everything above 255 to white.
        pixels = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
        grey = np.clip(np.rint(pixels * (255.0 / peak)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode == "F":
        grey = np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("LA", "La"):
        image = image.convert("L")
    return image.convert("RGB")


def image_preprocess(
    *, image: Image.Image, input_size: int, preprocessing: dict | None = None
) -> np.ndarray:
    """The model input for ``image``: a float32 array of shape (1, input_size, input_size, 3).

    EXIF orientation applied, RGB, resized to a square regardless of aspect ratio, and pixel
    values scaled linearly from [0, 255] to the model's range ([-1, 1] for MobileNet). A
    ``crop`` option in (0, 1] first keeps that central fraction of the width and of the height
    (absent: the whole image). Options a version may record besides: ``resize:
    "shorter_side"`` keeps the aspect ratio and takes the central square instead of
    stretching; ``resize: "central_square"`` cuts the central square of ``crop`` x the
    shorter side and resizes only that (the region of a shorter side resized to
    input_size / crop, then its central input_size square: 256 then 224 for crop 0.875);
    ``mean`` and ``std`` (three numbers each) standardise each channel after scaling (CLIP:
    scale [0, 1], then OpenAI's mean and std); ``reducing_gap`` (Pillow's, at least 1) lets
    the final resize first shrink by an integer factor with a box filter (faster, not exact;
    measured by ``evaluate_model --draft``, recorded by no offline model). ``jpeg_draft_margin``
    is for the decode (``jpeg_draft_size``).
    """
    options = {**DEFAULT_PREPROCESSING, **(preprocessing or {})}
    rgb = _to_rgb(_exif_transposed(image))
    crop = float(options.get("crop", 1.0))
    if not 0.0 < crop <= 1.0:
        raise ValueError(f"The crop fraction must be in (0, 1], not {crop}.")
    resample = _RESAMPLING[options["resample"]]
    resize = options.get("resize", "square")
    if resize == "central_square":
        rgb = _central_square(rgb, fraction=crop)
    elif crop < 1.0:
        width, height = rgb.size
        keep_width, keep_height = max(1, round(width * crop)), max(1, round(height * crop))
        left, top = (width - keep_width) // 2, (height - keep_height) // 2
        rgb = rgb.crop((left, top, left + keep_width, top + keep_height))
    if resize == "shorter_side":
        rgb = _shorter_side_center_cropped(rgb, size=input_size, resample=resample)
    elif resize not in RESIZE_MODES:
        raise ValueError(
            f"The resize mode must be one of {', '.join(RESIZE_MODES)}, not {resize!r}."
        )
    if rgb.size != (input_size, input_size):
        rgb = rgb.resize(
            (input_size, input_size), resample=resample, reducing_gap=_reducing_gap(options)
        )
    low, high = (float(bound) for bound in options["scale"])
    pixels = np.asarray(rgb, dtype=np.float32)
    # Dividing by 255 / (high - low) (127.5 for [-1, 1]) keeps 0, 127.5 and 255 exact.
    scaled = pixels / np.float32(255.0 / (high - low)) + np.float32(low)
    if "mean" in options or "std" in options:
        mean, std = _channel_statistics(options)
        scaled = (scaled - mean) / std
    return scaled[np.newaxis, ...]


def _reducing_gap(options: dict) -> float | None:
    gap = options.get("reducing_gap")
    if gap is None:
        return None
    if float(gap) < 1.0:
        raise ValueError(f"reducing_gap must be at least 1, not {gap}.")
    return float(gap)


def _central_square(image: Image.Image, *, fraction: float) -> Image.Image:
    """The central square of ``fraction`` of the shorter side, as EfficientNet's evaluation cuts it.

    Size and offsets follow the TensorFlow original's ``_decode_and_center_crop``: the side is
    int(fraction x shorter side) (at least 1), the offsets (side difference + 1) // 2.
    """
    width, height = image.size
    side = max(1, int(fraction * min(width, height)))
    left, top = (width - side + 1) // 2, (height - side + 1) // 2
    if (side, side) == image.size:
        return image
    return image.crop((left, top, left + side, top + side))


def _shorter_side_center_cropped(
    image: Image.Image, *, size: int, resample: Image.Resampling
) -> Image.Image:
    """Aspect kept: the shorter side resized to ``size``, then the central square (CLIP's way).

    Rounding follows torchvision's Resize and CenterCrop, which CLIP's own preprocessing uses.
    """
    width, height = image.size
    if width <= height:
        new_size = (size, max(size, int(size * height / width)))
    else:
        new_size = (max(size, int(size * width / height)), size)
    if new_size != image.size:
        image = image.resize(new_size, resample=resample)
    left = round((new_size[0] - size) / 2.0)
    top = round((new_size[1] - size) / 2.0)
    return image.crop((left, top, left + size, top + size))


def _channel_statistics(options: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (RGB) applied after scaling; absent: 0 and 1."""
    mean = np.asarray(options.get("mean", [0.0, 0.0, 0.0]), dtype=np.float32)
    std = np.asarray(options.get("std", [1.0, 1.0, 1.0]), dtype=np.float32)
    if mean.shape != (3,) or std.shape != (3,) or not (std > 0).all():
        raise ValueError("mean and std must be three numbers each, std positive.")
    return mean, std
