"""The bad-image corpus: files made by the tests to break an image decoder, and what each gets."""

import functools
import io
import os
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tests.support.images import encode, image_bytes


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming_size(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with almost no pixel data behind it."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + _png_chunk(b"IEND", b"")
    )


def gif_whose_later_frame_enlarges_the_canvas() -> bytes:
    """A 4 x 4 green GIF whose second frame claims 60,000 x 60,000 pixels (a bomb if sought)."""
    first = image_bytes(format="GIF", size=(4, 4), color=(0, 255, 0))
    assert first.endswith(b";")
    # Image descriptor at (0, 0), 60000 x 60000, no local palette; LZW code size 2, codes
    # clear (4) and end (5) packed into one byte; then the block terminator.
    descriptor = b"," + struct.pack("<HHHHB", 0, 0, 60_000, 60_000, 0)
    return first[:-1] + descriptor + b"\x02\x01\x2c\x00" + b";"


@functools.cache
def gif_with_frames(count: int, size: int = 32) -> bytes:
    """An animated GIF of ``count`` frames: red first, then blue ones."""
    frames = [
        Image.new("RGB", (size, size), (255, 0, 0)),
        Image.new("RGB", (size, size), (0, 0, 255)),
    ]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:count], duration=10, loop=0)
    data = buffer.getvalue()
    if count <= 2:
        return data
    first_control = data.index(b"\x21\xf9\x04")
    second_control = data.index(b"\x21\xf9\x04", first_control + 1)
    later_frame = data[second_control:-1]
    return data[:-1] + later_frame * (count - 2) + b";"


def truncated_jpeg() -> bytes:
    data = encode(
        Image.fromarray(np.random.default_rng(1).integers(0, 256, (200, 200, 3), np.uint8)), "JPEG"
    )
    return data[: len(data) // 2]


def psd_header() -> bytes:
    # Signature, version 1, reserved, 3 channels, 4 x 4, 8 bits, RGB; empty sections.
    return b"8BPS" + struct.pack(">H6sHIIHH", 1, b"\0" * 6, 3, 4, 4, 8, 3) + b"\0" * 16


def eps_file() -> bytes:
    return b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 4 4\n%%EndComments\nshowpage\n%%EOF\n"


def _exif_ifd(entries: list[tuple[int, int, int, bytes]], *, truncate: int = 0) -> bytes:
    out = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        out += struct.pack("<HHI", tag, kind, count) + value
    out += b"\0\0\0\0"
    return b"Exif\x00\x00" + (out[:-truncate] if truncate else out)


def jpeg_with_exif(exif: bytes) -> bytes:
    return image_bytes(format="JPEG", size=(8, 4), color=(0, 255, 0), exif=exif)


def sixteen_bit_ramp() -> bytes:
    ramp = np.linspace(0, 65535, 256, dtype=np.uint16).reshape(1, 256).repeat(4, 0)
    return encode(Image.fromarray(ramp), "PNG")


def palette_with_transparency() -> bytes:
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    return encode(image, "PNG", transparency=0)


@dataclass(frozen=True)
class Case:
    name: str
    make: object  # () -> bytes
    status: int
    code: str | None  # None: a classification


ORIENTATION = 0x0112
CORPUS = [
    Case(
        "decompression bomb (2.5 gigapixels claimed)",
        lambda: png_claiming_size(50_000, 50_000),
        413,
        "image_too_many_pixels",
    ),
    Case(
        "over the pixel limit, under Pillow's",
        lambda: png_claiming_size(8_000, 6_000),
        413,
        "image_too_many_pixels",
    ),
    Case(
        "GIF whose later frame enlarges the canvas",
        gif_whose_later_frame_enlarges_the_canvas,
        200,
        None,
    ),
    Case("10,000-frame GIF", lambda: gif_with_frames(10_000), 200, None),
    Case("truncated JPEG", truncated_jpeg, 422, "undecodable_image"),
    Case("random bytes", lambda: os.urandom(4096), 415, "unsupported_image_type"),
    Case("empty file", lambda: b"", 400, "empty_image"),
    Case(
        "HTML named .jpg",
        lambda: b"<!doctype html><html><body>Hello</body></html>",
        415,
        "unsupported_image_type",
    ),
    Case("TIFF", lambda: image_bytes(format="TIFF", size=(4, 4)), 415, "unsupported_image_type"),
    Case("PSD", psd_header, 415, "unsupported_image_type"),
    Case("EPS", eps_file, 415, "unsupported_image_type"),
    Case("ICO", lambda: image_bytes(format="ICO", size=(16, 16)), 415, "unsupported_image_type"),
    Case(
        "EXIF with a truncated IFD",
        lambda: jpeg_with_exif(_exif_ifd([(ORIENTATION, 3, 1, b"\x06\0\0\0")] * 5, truncate=30)),
        200,
        None,
    ),
    Case(
        "EXIF that is garbage", lambda: jpeg_with_exif(b"Exif\x00\x00garbage, not TIFF"), 200, None
    ),
    Case(
        "EXIF orientation out of range",
        lambda: jpeg_with_exif(_exif_ifd([(ORIENTATION, 3, 1, b"\xff\xff\0\0")])),
        200,
        None,
    ),
    Case(
        "EXIF IFD pointing at itself",
        lambda: jpeg_with_exif(
            _exif_ifd([(ORIENTATION, 3, 1, b"\x06\0\0\0"), (0x8769, 4, 1, struct.pack("<I", 8))])
        ),
        200,
        None,
    ),
    Case(
        "CMYK JPEG",
        lambda: image_bytes(format="JPEG", mode="CMYK", color=(0, 255, 255, 0)),
        200,
        None,
    ),
    Case("palette PNG with transparency", palette_with_transparency, 200, None),
    Case("LA PNG", lambda: image_bytes(format="PNG", mode="LA", color=(255, 0)), 200, None),
    Case("1-bit PNG", lambda: image_bytes(format="PNG", mode="1", color=1), 200, None),
    Case("16-bit greyscale PNG", sixteen_bit_ramp, 200, None),
    Case("1 x 1 PNG", lambda: image_bytes(format="PNG", size=(1, 1)), 200, None),
    Case("1 x 65,500 JPEG", lambda: image_bytes(format="JPEG", size=(1, 65_500)), 200, None),
    Case("1 x 65,500 PNG", lambda: image_bytes(format="PNG", size=(1, 65_500)), 200, None),
]
