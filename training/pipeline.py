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
from training.dataset import CATEGORIES, GarmentLabels


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


def epoch_counter() -> Any:
    """The epoch a training dataset draws its shuffle order and augmentation for: an int64
    variable, read when each pass over the dataset starts. The caller sets it before each
    epoch (training does, from a Keras callback), so a resumed run draws what an uninterrupted
    one would."""
    tf = _tensorflow()
    return tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")


def _augmentation(*, tf: Any, input_size: int, low: float, high: float) -> Any:
    """Mirror, brightness and contrast jitter within the preprocessing's range, and a small
    zoom; stateless: the same image and seed give the same pixels, whatever the thread."""
    span = high - low

    def jitter(image: Any, seed: Any) -> Any:
        flip, brightness, contrast, zoom, crop = tf.unstack(
            tf.random.experimental.stateless_split(seed, num=5)
        )
        image = tf.image.stateless_random_flip_left_right(image, seed=flip)
        image = tf.image.stateless_random_brightness(image, 0.1 * span, seed=brightness)
        mean = tf.reduce_mean(image)
        image = (image - mean) * tf.random.stateless_uniform((), contrast, 0.85, 1.15) + mean
        side = tf.cast(
            tf.cast(input_size, tf.float32) * tf.random.stateless_uniform((), zoom, 0.9, 1.0),
            tf.int32,
        )
        image = tf.image.stateless_random_crop(image, (side, side, 3), seed=crop)
        image = tf.image.resize(image, (input_size, input_size))
        return tf.clip_by_value(image, low, high)

    return jitter


def _shuffled(*, tf: Any, dataset: Any, size: int, seed: Any) -> Any:
    """``dataset`` (of ``size`` elements) in a random order drawn from ``seed``, a (2,) int64
    tensor. Dataset.shuffle cannot take a seed computed in the graph once the global
    seed is 0 (it compares the seed pair in Python), so its kernel is called with both seeds."""
    spec = tf.nest.flatten(dataset.element_spec)
    variant = tf.raw_ops.ShuffleDataset(
        input_dataset=tf.data.experimental.to_variant(dataset),
        buffer_size=tf.constant(size, tf.int64),
        seed=seed[0],
        seed2=seed[1],
        output_types=[part.dtype for part in spec],
        output_shapes=[part.shape for part in spec],
        reshuffle_each_iteration=False,
    )
    return tf.data.experimental.from_variant(variant, dataset.element_spec)


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
    epoch: Any = None,
    cache_dir: Path | None = None,
) -> Any:
    """A tf.data dataset of (image, {"category": one-hot, "tags": 0/1}) batches.

    Each row's image is the one ``labels`` checked (``image_paths``), else ``<uuid>.jpg`` in
    ``images_dir``.

    Images are decoded and preprocessed once (cached in memory, or in ``cache_dir`` for data
    larger than memory should hold), then shuffled and augmented per epoch: mirrored,
    brightness and contrast jittered within the preprocessing's range, and zoomed a little.
    The order and every random draw are functions of ``seed``, the epoch (``epoch``, from
    ``epoch_counter``; without one each pass over the dataset counts as the next epoch) and
    the row: the same arguments give the same batches, in any process.
    """
    tf = _tensorflow()
    low, high = (float(bound) for bound in preprocessing["scale"])
    paths = [str(labels.image(row, images_dir=images_dir)) for row in rows]
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
    if shuffle or augment:
        examples = tf.data.Dataset.zip((tf.data.Dataset.range(len(paths)), dataset))
        jitter = _augmentation(tf=tf, input_size=input_size, low=low, high=high)
        base = tf.constant([seed, 0], dtype=tf.int64)

        def one_epoch(number: Any) -> Any:
            # Built anew each epoch over the same cached images, with this epoch's seed.
            epoch_seed = tf.random.experimental.stateless_fold_in(base, number)
            passed = examples
            if shuffle:
                passed = _shuffled(tf=tf, dataset=examples, size=len(paths), seed=epoch_seed)
            if augment:

                def augmented(row: Any, example: tuple) -> tuple:
                    image, target = example
                    row_seed = tf.random.experimental.stateless_fold_in(epoch_seed, row)
                    return jitter(image, row_seed), target

                return passed.map(
                    augmented, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
                )
            return passed.map(lambda row, example: example)

        if epoch is None:
            counted = tf.Variable(-1, dtype=tf.int64, trainable=False)
            number = tf.data.Dataset.from_tensors(0).map(lambda _: counted.assign_add(1))
        else:
            number = tf.data.Dataset.from_tensors(0).map(lambda _: epoch.read_value())
        # One pass is one epoch of known length (flat_map hides it from Keras otherwise).
        dataset = number.flat_map(one_epoch).apply(
            tf.data.experimental.assert_cardinality(len(paths))
        )
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
