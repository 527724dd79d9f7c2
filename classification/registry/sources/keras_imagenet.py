"""Keras Applications models with ImageNet weights, downloaded once and checksum verified.

MobileNetV2 (registered as ``imagenet``) and MobileNet v1 (``mobilenet``) are fetched the same
way: the architecture is built by Keras without weights, the weights file Keras publishes is
downloaded and loaded into it, and the class names come from Keras' class index.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from classification.exceptions import ModelRegistrationError
from classification.registry.conversion import _tensorflow
from classification.registry.sources import ModelSource
from classification.registry.sources.downloads import download_verified


@dataclass(frozen=True)
class KerasImagenetModel:
    """One Keras application at 224 x 224 with the 1000 ImageNet classes."""

    architecture: str  # the keras.applications constructor
    weights_file: str  # its name in the download cache
    weights_url_setting: str
    weights_sha256_setting: str


MOBILENET_V2 = KerasImagenetModel(
    architecture="MobileNetV2",
    weights_file="mobilenet_v2_imagenet_1.0_224.h5",
    weights_url_setting="IMAGENET_WEIGHTS_URL",
    weights_sha256_setting="IMAGENET_WEIGHTS_SHA256",
)
# alpha 1.0, 224 x 224: Keras' mobilenet_1_0_224_tf.h5.
MOBILENET_V1 = KerasImagenetModel(
    architecture="MobileNet",
    weights_file="mobilenet_1_0_224_tf.h5",
    weights_url_setting="MOBILENET_WEIGHTS_URL",
    weights_sha256_setting="MOBILENET_WEIGHTS_SHA256",
)


def imagenet_labels(class_index: dict) -> list[str]:
    """Keras' imagenet_class_index.json -> 1000 readable names in output order."""
    try:
        return [class_index[str(index)][1].replace("_", " ") for index in range(1000)]
    except (KeyError, IndexError, TypeError) as exc:
        raise ModelRegistrationError(
            "The ImageNet class index is not Keras' 1000-class index."
        ) from exc


def keras_imagenet_source(
    *, model: KerasImagenetModel, workdir: Path, accept_unverified: bool = False
) -> ModelSource:
    """``model`` with its downloaded, verified ImageNet weights, saved as .keras in ``workdir``.

    The weights URL and SHA-256 come from the settings ``model`` names; the class index from
    IMAGENET_CLASS_INDEX_URL and IMAGENET_CLASS_INDEX_SHA256. Raises ModelRegistrationError.
    """
    weights_url = getattr(settings, model.weights_url_setting)
    weights = download_verified(
        url=weights_url,
        sha256=getattr(settings, model.weights_sha256_setting),
        name=model.weights_file,
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

    tf = _tensorflow()
    build = getattr(tf.keras.applications, model.architecture)
    keras_model = build(weights=None, input_shape=(224, 224, 3), classes=1000)
    try:
        keras_model.load_weights(str(weights))
    except Exception as exc:
        raise ModelRegistrationError(
            f"The weights in {weights} do not fit {model.architecture}: {exc}"
        ) from exc
    model_path = workdir / f"{model.architecture.lower()}_imagenet.keras"
    keras_model.save(model_path)
    weights_sha256 = hashlib.sha256(weights.read_bytes()).hexdigest()
    return ModelSource(
        artifact_path=model_path,
        labels=labels,
        input_size=224,
        # Keras' preprocessing for both is its 'tf' mode, [-1, 1]: the registry's default.
        source=(
            f"Keras {model.architecture}, ImageNet weights from {weights_url} "
            f"(SHA-256 {weights_sha256})"
        )[:500],
    )


def imagenet_source(*, workdir: Path, accept_unverified: bool = False) -> ModelSource:
    """Keras MobileNetV2 (1000 ImageNet classes, 224 x 224) with downloaded, verified weights."""
    return keras_imagenet_source(
        model=MOBILENET_V2, workdir=workdir, accept_unverified=accept_unverified
    )


def mobilenet_source(*, workdir: Path, accept_unverified: bool = False) -> ModelSource:
    """Keras MobileNet v1 (alpha 1.0, 1000 ImageNet classes, 224 x 224), weights verified."""
    return keras_imagenet_source(
        model=MOBILENET_V1, workdir=workdir, accept_unverified=accept_unverified
    )
