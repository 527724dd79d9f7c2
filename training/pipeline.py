"""The input pipeline: a stratified split and tf.data datasets over the garment images.

Images go through ``classification.serving.imaging`` (``image_decode`` then
``image_preprocess``), the very functions serving runs on every request, so a model sees the
same pixels in training as in production.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings

from classification.registry.conversion import _tensorflow
from classification.serving.imaging import image_decode, image_preprocess
from training.dataset import CATEGORIES, GarmentLabels, image_path


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # row indices into the labels
    validation: np.ndarray


def split_stratified(*, categories: np.ndarray, validation_fraction: float, seed: int) -> Split:
    """Hold out ``validation_fraction`` of every category (at least one row of each category
    that has two or more), the same rows for the same seed."""
    rng = np.random.default_rng(seed)
    train: list[int] = []
    validation: list[int] = []
    for category in np.unique(categories):
        rows = np.flatnonzero(categories == category)
        rng.shuffle(rows)
        held = round(len(rows) * validation_fraction) if len(rows) > 1 else 0
        held = max(held, 1) if len(rows) > 1 else 0
        validation.extend(rows[:held].tolist())
        train.extend(rows[held:].tolist())
    return Split(train=np.array(sorted(train)), validation=np.array(sorted(validation)))


def image_load(*, path: Path, input_size: int, preprocessing: dict) -> np.ndarray:
    """One image as serving would see it: (input_size, input_size, 3) float32.

    Raises the errors of ``image_decode`` and OSError.
    """
    decoded = image_decode(data=Path(path).read_bytes(), max_pixels=settings.IMAGE_MAX_PIXELS)
    return image_preprocess(
        image=decoded.image, input_size=input_size, preprocessing=preprocessing
    )[0]


def dataset_build(
    *,
    labels: GarmentLabels,
    rows: np.ndarray,
    images_dir: Path,
    input_size: int,
    preprocessing: dict,
    batch_size: int,
    augment: bool = False,
    shuffle: bool = False,
    seed: int = 0,
    cache_dir: Path | None = None,
) -> Any:
    """A tf.data dataset of (image, {"category": one-hot, "tags": 0/1}) batches.

    Images are decoded and preprocessed once (cached in memory, or in ``cache_dir`` for data
    larger than memory should hold), then augmented per epoch: mirrored, brightness and
    contrast jittered within the preprocessing's range, and zoomed a little.
    """
    tf = _tensorflow()
    low, high = (float(bound) for bound in preprocessing["scale"])
    paths = [str(image_path(images_dir=images_dir, uuid=labels.uuids[row])) for row in rows]
    categories = labels.categories[rows]
    one_hot = np.eye(len(CATEGORIES), dtype=np.float32)[categories]
    tags = labels.tags[rows]

    def load(path: bytes) -> np.ndarray:
        return image_load(
            path=Path(path.decode()), input_size=input_size, preprocessing=preprocessing
        )

    def load_tf(path: Any) -> Any:
        image = tf.numpy_function(load, [path], tf.float32, stateful=False)
        image.set_shape((input_size, input_size, 3))
        return image

    images = tf.data.Dataset.from_tensor_slices(paths).map(
        load_tf, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    images = images.cache(str(cache_dir / "images")) if cache_dir is not None else images.cache()
    targets = tf.data.Dataset.from_tensor_slices({"category": one_hot, "tags": tags})
    dataset = tf.data.Dataset.zip((images, targets))
    if shuffle:
        dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    if augment:
        span = high - low

        def jitter(image: Any, *rest: Any) -> tuple:
            image = tf.image.random_flip_left_right(image)
            image = tf.image.random_brightness(image, 0.1 * span)
            mean = tf.reduce_mean(image)
            image = (image - mean) * tf.random.uniform((), 0.85, 1.15) + mean
            zoom = tf.random.uniform((), 0.9, 1.0)
            side = tf.cast(tf.cast(input_size, tf.float32) * zoom, tf.int32)
            image = tf.image.random_crop(image, (side, side, 3))
            image = tf.image.resize(image, (input_size, input_size))
            return (tf.clip_by_value(image, low, high), *rest)

        dataset = dataset.map(jitter, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
