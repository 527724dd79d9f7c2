"""Images made by the tests themselves: every format and mode the service must handle."""

import io

import numpy as np
from PIL import Image


def image_bytes(
    *,
    format: str = "JPEG",
    size: tuple[int, int] = (64, 48),
    mode: str = "RGB",
    color: object = (200, 120, 40),
    **save_options: object,
) -> bytes:
    image = Image.new(mode, size, color)  # type: ignore[arg-type]
    buffer = io.BytesIO()
    image.save(buffer, format=format, **save_options)
    return buffer.getvalue()


def noise_image(*, size: tuple[int, int] = (160, 160), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels, mode="RGB")


def encode(image: Image.Image, format: str = "PNG", **save_options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **save_options)
    return buffer.getvalue()
