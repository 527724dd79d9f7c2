"""Garment photos made as the generated dataset makes them, for the training tests."""

import io

import numpy as np


def garment_jpeg(*, category: str, tags: dict[str, int], seed: int, size: int = 96) -> bytes:
    """One generated garment photo, as the dataset's images are made."""
    from training.dataset import TAGS, _garment_image

    rng = np.random.default_rng(seed)
    image = _garment_image(
        category=category,
        colour="LIGHT-BLUE",
        tags=np.array([tags.get(tag, 0) for tag in TAGS]),
        size=(size, int(size * 1.15)),
        rng=rng,
    )
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()
