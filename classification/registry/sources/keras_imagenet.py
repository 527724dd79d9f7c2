"""Keras Applications models with ImageNet weights, downloaded once and checksum verified."""

import json
from pathlib import Path

from django.conf import settings

from classification.exceptions import ModelRegistrationError
from classification.registry.sources import ModelSource
from classification.registry.sources.downloads import download_verified


def imagenet_labels(class_index: dict) -> list[str]:
    """Keras' imagenet_class_index.json -> 1000 readable names in output order."""
    try:
        return [class_index[str(index)][1].replace("_", " ") for index in range(1000)]
    except (KeyError, IndexError, TypeError) as exc:
        raise ModelRegistrationError(
            "The ImageNet class index is not Keras' 1000-class index."
        ) from exc


def imagenet_source(*, workdir: Path, accept_unverified: bool = False) -> ModelSource:
    """Keras MobileNetV2 (1000 ImageNet classes, 224 x 224) with downloaded, verified weights."""
    weights = download_verified(
        url=settings.IMAGENET_WEIGHTS_URL,
        sha256=settings.IMAGENET_WEIGHTS_SHA256,
        name="mobilenet_v2_imagenet_1.0_224.h5",
        accept_unverified=accept_unverified,
    )
    index_path = download_verified(
        url=settings.IMAGENET_CLASS_INDEX_URL,
        sha256=settings.IMAGENET_CLASS_INDEX_SHA256,
        name="imagenet_class_index.json",
        accept_unverified=accept_unverified,
    )
    try:
        labels = imagenet_labels(json.loads(index_path.read_text()))
    except ValueError as exc:
        raise ModelRegistrationError("The ImageNet class index is not valid JSON.") from exc

    from classification.registry.conversion import _tensorflow

    tf = _tensorflow()
    model = tf.keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), classes=1000)
    try:
        model.load_weights(str(weights))
    except Exception as exc:
        raise ModelRegistrationError(
            f"The weights in {weights} do not fit MobileNetV2: {exc}"
        ) from exc
    model_path = workdir / "mobilenet_v2_imagenet.keras"
    model.save(model_path)
    return ModelSource(
        artifact_path=model_path,
        labels=labels,
        input_size=224,
        source=f"Keras MobileNetV2, ImageNet weights from {settings.IMAGENET_WEIGHTS_URL}",
    )
