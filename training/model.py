"""The multi-task garment model: one EfficientNet-Lite0 backbone, two heads.

A softmax head (``category``) over the categories and a sigmoid head (``tags``), one per
pattern tag, share every backbone computation: one forward pass answers both questions.
"""

from pathlib import Path
from typing import Any

import numpy as np

from classification.registry.sources import efficientnet_lite
from training.pipeline import _tensorflow

BACKBONE_NAME = "efficientnet_lite0_backbone"
# EfficientNet-Lite0's own input contract ((x - 127) / 128, centre crop 0.875): the backbone's
# ImageNet weights were learnt with it. Garment photos are framed already: no crop.
PREPROCESSING = {"resample": "bilinear", "scale": efficientnet_lite.PREPROCESSING["scale"]}
# Fine-tuning unfreezes the backbone from this block on (blocks 12-15 and the 1280 head).
FINE_TUNE_FROM_BLOCK = 12


def backbone_build(*, input_size: int, weights: str, workdir: Path) -> Any:
    """EfficientNet-Lite0 features, "imagenet" weights (the registry's offline checkpoint) or
    "random" (a stated fallback, for tests of the plumbing only)."""
    if weights == "imagenet":
        return efficientnet_lite.efficientnet_lite0_backbone(input_size=input_size, workdir=workdir)
    if weights == "random":
        return efficientnet_lite.efficientnet_lite0_keras(input_size=input_size, include_top=False)
    raise ValueError(f"Unknown backbone weights {weights!r}: 'imagenet' or 'random'.")


def multi_task_model_build(
    *,
    input_size: int,
    num_categories: int,
    num_tags: int,
    weights: str,
    workdir: Path,
    dropout: float = 0.2,
    seed: int | None = None,
) -> Any:
    """The Keras model: ``image`` in, ``{"category": softmax, "tags": sigmoid}`` out.

    The backbone starts frozen (the heads train first); its batch norms always run in
    inference mode, so fine-tuning on small batches cannot spoil their ImageNet statistics.
    A ``seed`` makes the heads' initial weights (and the dropout's draws) the same each time.
    """
    keras = _tensorflow().keras
    if seed is not None:
        keras.utils.set_random_seed(seed)
    backbone = backbone_build(input_size=input_size, weights=weights, workdir=workdir)
    backbone.trainable = False
    inputs = keras.Input(shape=(input_size, input_size, 3), name="image")
    features = backbone(inputs, training=False)
    features = keras.layers.Dropout(dropout, name="dropout")(features)
    category = keras.layers.Dense(num_categories, activation="softmax", name="category")(features)
    tags = keras.layers.Dense(num_tags, activation="sigmoid", name="tags")(features)
    return keras.Model(inputs, {"category": category, "tags": tags}, name="garment_multi_task")


def single_head_model(*, model: Any, head: str) -> Any:
    """A model of one of ``model``'s heads over the same backbone (for comparisons)."""
    keras = _tensorflow().keras
    return keras.Model(model.inputs, model.get_layer(head).output, name=head)


def backbone_unfreeze_top(*, model: Any, from_block: int = FINE_TUNE_FROM_BLOCK) -> int:
    """Make the backbone's last blocks trainable (batch norms stay frozen). Returns how many
    layers now train."""
    keras = _tensorflow().keras
    backbone = model.get_layer(BACKBONE_NAME)
    backbone.trainable = True
    trainable = 0
    reached = False
    for layer in backbone.layers:
        if layer.name.startswith(f"block{from_block}_"):
            reached = True
        train = reached and not isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = train
        trainable += int(train and bool(layer.weights))
    return trainable


def category_loss(*, class_weights: np.ndarray) -> Any:
    """Cross-entropy with each example weighted by its category's weight (class balance)."""
    tf = _tensorflow()
    weights = tf.constant(class_weights, dtype=tf.float32)

    def weighted_crossentropy(y_true: Any, y_pred: Any) -> Any:
        loss = tf.keras.losses.categorical_crossentropy(y_true, y_pred)
        return loss * tf.reduce_sum(y_true * weights, axis=-1)

    return weighted_crossentropy


def class_weights_balanced(*, categories: np.ndarray, num_categories: int) -> np.ndarray:
    """n / (k * count) per category, as scikit-learn's "balanced"; absent categories get 1."""
    counts = np.bincount(categories, minlength=num_categories).astype(np.float64)
    weights = np.where(counts > 0, len(categories) / (num_categories * np.maximum(counts, 1)), 1.0)
    return weights.astype(np.float32)


def model_compile(*, model: Any, class_weights: np.ndarray, learning_rate: float) -> None:
    keras = _tensorflow().keras
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss={
            "category": category_loss(class_weights=class_weights),
            # Focal loss: the rare tags' few positives are not drowned by easy negatives.
            "tags": keras.losses.BinaryFocalCrossentropy(gamma=2.0),
        },
        metrics={
            "category": [keras.metrics.CategoricalAccuracy(name="accuracy")],
            "tags": [keras.metrics.AUC(name="auc", multi_label=True)],
        },
    )
