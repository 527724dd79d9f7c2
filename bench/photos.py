"""The load test's upload photos: the small bench JPEG and three camera-size ones.

The camera-size photos are real photographs that ship inside the scikit-image wheel (already
pinned for the tests), cut to the camera's aspect ratio and upscaled with Pillow's LANCZOS
filter to a phone camera's pixel count: ``12mp`` is the cat (chelsea) as a 4032 x 3024 JPEG at
quality 90, ``24mp`` the coffee cup as a 6000 x 4000 JPEG at quality 90, ``png`` the
astronaut as a 4032 x 3024 PNG (12.2 million pixels, 6.8 MB: within IMAGE_MAX_BYTES and
IMAGE_MAX_PIXELS). An upscaled photo has less fine detail than a camera's, so its JPEG is
smaller than a camera's (0.9 and 1.9 MB against the 3-6 MB of a phone's); the pixels to
decode and resize, which dominate, are a camera's.
"""

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from bench.classification import bench_jpeg


@dataclass(frozen=True)
class Photo:
    name: str  # the --photos name
    scenario: str  # load.lua's scenario of its uploads
    data: bytes
    content_type: str
    size: tuple[int, int]


# --photos name -> (load.lua scenario, scikit-image photo, size, format); "small" is bench_jpeg.
PHOTOS = {
    "small": ("upload", "", (640, 480), "JPEG"),
    "12mp": ("upload_12mp", "chelsea", (4032, 3024), "JPEG"),
    "24mp": ("upload_24mp", "coffee", (6000, 4000), "JPEG"),
    "png": ("upload_png_camera", "astronaut", (4032, 3024), "PNG"),
}


def _scikit_image_photo(name: str, size: tuple[int, int]) -> Image.Image:
    """The photo's central region of ``size``'s aspect ratio, upscaled to ``size`` (LANCZOS)."""
    from skimage import data  # here: only the camera-size photos need it

    pixels: np.ndarray = getattr(data, name)()
    image = Image.fromarray(pixels).convert("RGB")
    width, height = image.size
    aspect = size[0] / size[1]
    keep_width, keep_height = min(width, round(height * aspect)), min(height, round(width / aspect))
    left, top = (width - keep_width) // 2, (height - keep_height) // 2
    region = image.crop((left, top, left + keep_width, top + keep_height))
    return region.resize(size, resample=Image.Resampling.LANCZOS)


def photo_make(name: str) -> Photo:
    """The upload photo called ``name`` in --photos (small, 12mp, 24mp or png)."""
    scenario, source, size, image_format = PHOTOS[name]
    if not source:
        data = bench_jpeg(seed=1, size=size)
    else:
        buffer = io.BytesIO()
        options = {"quality": 90} if image_format == "JPEG" else {}
        _scikit_image_photo(source, size).save(buffer, image_format, **options)
        data = buffer.getvalue()
    return Photo(
        name=name,
        scenario=scenario,
        data=data,
        content_type=f"image/{image_format.lower()}",
        size=size,
    )
