"""Tiny real classifiers the tests build and register themselves (no downloads)."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TINY_LABELS = ["red", "green", "blue"]
TINY_INPUT_SIZE = 32


def build_tiny_keras_model(path: Path, *, seed: int = 1, logits: bool = False) -> Path:
    """A 3-class convolutional classifier over 32 x 32 RGB, saved as .keras (or .h5)."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input(shape=(TINY_INPUT_SIZE, TINY_INPUT_SIZE, 3))
    x = tf.keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    outputs = tf.keras.layers.Dense(3, activation=None if logits else "softmax")(x)
    tf.keras.Model(inputs, outputs).save(path)
    return path


def build_tiny_saved_model(path: Path, *, seed: int = 2) -> Path:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input(shape=(TINY_INPUT_SIZE, TINY_INPUT_SIZE, 3))
    x = tf.keras.layers.GlobalAveragePooling2D()(inputs)
    outputs = tf.keras.layers.Dense(3, activation="softmax")(x)
    tf.keras.Model(inputs, outputs).export(str(path))
    return path


TINY_TAG_LABELS = ["warm", "cool"]


def build_tiny_multi_task_model(path: Path) -> Path:
    """A multi-task model over 32 x 32 RGB with fixed weights, so tests know what it answers.

    Both heads read the image's mean colour (scaled to [-1, 1]): ``category`` leans to the
    strongest channel of TINY_LABELS, and the tag ``warm`` is present (probability near 1) for
    reddish images, ``cool`` for bluish ones.
    """
    import numpy as np
    import tensorflow as tf

    inputs = tf.keras.Input(shape=(TINY_INPUT_SIZE, TINY_INPUT_SIZE, 3), name="image")
    colour = tf.keras.layers.GlobalAveragePooling2D()(inputs)
    category_layer = tf.keras.layers.Dense(3, activation="softmax", name="category")
    tags_layer = tf.keras.layers.Dense(2, activation="sigmoid", name="tags")
    model = tf.keras.Model(inputs, {"category": category_layer(colour), "tags": tags_layer(colour)})
    category_layer.set_weights([4.0 * np.eye(3, dtype=np.float32), np.zeros(3, np.float32)])
    # warm: 8 * (red - blue), cool: 8 * (blue - red).
    tags_layer.set_weights(
        [np.array([[8.0, -8.0], [0.0, 0.0], [-8.0, 8.0]], np.float32), np.zeros(2, np.float32)]
    )
    model.save(path)
    return path
