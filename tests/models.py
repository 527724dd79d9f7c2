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
