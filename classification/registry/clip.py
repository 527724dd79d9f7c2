"""Registering a CLIP checkpoint as a zero-shot model version (KerasHub and TensorFlow's part).

KerasHub and TensorFlow are imported only inside these functions: serving never loads them.
The checkpoint is a KerasHub preset, by name (downloaded from its hub, online only) or as a
local preset folder (what ``CLIPBackbone.save_to_preset`` and ``CLIPTokenizer.save_to_preset``
write). Both towers are converted to LiteRT and checked against Keras; the registration labels'
prompts are embedded once here and stored with the version.
"""

import io
import json
import logging
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from classification.exceptions import ModelRegistrationError
from classification.models import ModelVersion
from classification.registry.conversion import tflite_convert
from classification.registry.services import (
    PARITY_TOLERANCE,
    model_version_archive,
    model_version_create,
    model_version_promote,
)
from classification.registry.store import artifact_put_bytes, artifact_put_file
from classification.serving.engine import LiteRTClassifier
from classification.serving.zero_shot import CONTEXT_LENGTH, ClipTokenizer

logger = logging.getLogger(__name__)

# OpenAI CLIP's image preprocessing (its ``_transform``): shorter side to the input size with
# bicubic resampling, the central square, [0, 1], then these per-channel statistics.
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
CLIP_PREPROCESSING = {
    "resample": "bicubic",
    "resize": "shorter_side",
    "scale": [0.0, 1.0],
    "mean": CLIP_MEAN,
    "std": CLIP_STD,
}
DEFAULT_TEMPLATE = "a photo of a {}"
CIFAR100_LABELS_PATH = Path(__file__).resolve().parent.parent / "data" / "cifar100.txt"


def cifar100_labels() -> list[str]:
    """The 100 CIFAR-100 class names, in the data set's label order, underscores as spaces."""
    lines = CIFAR100_LABELS_PATH.read_text(encoding="utf-8").splitlines()
    return [line.strip().replace("_", " ") for line in lines if line.strip()]


def _keras_hub() -> ModuleType:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras_hub

    return keras_hub


@dataclass(frozen=True)
class ClipCheckpoint:
    """A loaded CLIP preset: the Keras backbone and its tokenizer's vocabulary and merges."""

    backbone: Any
    vocabulary: dict[str, int]
    merges: list[str]
    pad_token_id: int
    keras_tokenizer: Any  # KerasHub's CLIPTokenizer, to check ours against at registration

    @property
    def input_size(self) -> int:
        height, width, _channels = self.backbone.vision_encoder.image_shape
        if height != width:
            raise ModelRegistrationError(f"The image encoder takes {height}x{width} images.")
        return int(height)


def clip_checkpoint_load(*, preset: str) -> ClipCheckpoint:
    """Load a KerasHub CLIP preset (a name or a local folder). Raises ModelRegistrationError."""
    keras_hub = _keras_hub()
    try:
        backbone = keras_hub.models.CLIPBackbone.from_preset(preset)
        tokenizer = keras_hub.models.CLIPTokenizer.from_preset(preset)
    except Exception as exc:
        local = Path(preset).exists()
        advice = (
            ""
            if local
            else " A preset name is downloaded from KerasHub's hub, which needs internet; "
            "give a local preset folder otherwise."
        )
        raise ModelRegistrationError(
            f"Cannot load the CLIP preset {preset!r}: {exc}.{advice}"
        ) from exc
    merges = [str(merge) for merge in tokenizer.merges]
    return ClipCheckpoint(
        backbone=backbone,
        vocabulary=dict(tokenizer.vocabulary),
        merges=merges,
        pad_token_id=int(tokenizer.pad_token_id),
        keras_tokenizer=tokenizer,
    )


def _litert(model: Any) -> bytes:
    import tensorflow as tf

    try:
        return tflite_convert(tf.lite.TFLiteConverter.from_keras_model(model))
    except Exception as exc:
        raise ModelRegistrationError(f"TensorFlow could not convert the encoder: {exc}") from exc


def _normalised(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def median_ms(call: Any, runs: int = 10) -> float:
    """The median wall time of ``call`` over ``runs`` calls, in milliseconds."""
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        timings.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(timings), 3)


@dataclass(frozen=True)
class ConvertedClip:
    image_tflite: bytes
    text_tflite: bytes
    label_embeddings: np.ndarray  # (labels, dim), L2-normalised, from Keras' text encoder
    logit_scale: float
    metrics: dict


def clip_convert(
    *, checkpoint: ClipCheckpoint, prompts: list[str], tolerance: float = PARITY_TOLERANCE
) -> ConvertedClip:
    """Both towers as LiteRT, the prompts' embeddings, and the parity checks.

    Parity: on random standardised images, LiteRT's normalised image embeddings agree with
    Keras' within ``tolerance``; on ``prompts``, our tokenizer equals KerasHub's and LiteRT's
    text embeddings agree with Keras' (which are the ones stored). Raises
    ModelRegistrationError otherwise.
    """
    import keras

    backbone = checkpoint.backbone
    size = checkpoint.input_size
    images = keras.Input((size, size, 3), name="images")
    image_model = keras.Model(images, backbone.get_vision_embeddings(images))
    token_ids = keras.Input((CONTEXT_LENGTH,), dtype="int32", name="token_ids")
    text_model = keras.Model(token_ids, backbone.get_text_embeddings(token_ids))

    tokenizer = ClipTokenizer(vocabulary=checkpoint.vocabulary, merges=checkpoint.merges)
    for prompt in prompts:
        ours = tokenizer.tokenize(prompt)
        theirs = [int(i) for i in np.asarray(checkpoint.keras_tokenizer(prompt)).reshape(-1)]
        if ours != theirs:
            raise ModelRegistrationError(
                f"The tokenizer disagrees with KerasHub's on {prompt!r}: {ours} != {theirs}."
            )
    packed = np.concatenate(
        [
            tokenizer.pack(tokenizer.tokenize(prompt), pad_token_id=checkpoint.pad_token_id)
            for prompt in prompts
        ]
    )
    label_embeddings = _normalised(np.asarray(text_model.predict(packed, verbose=0)))

    image_tflite, text_tflite = _litert(image_model), _litert(text_model)
    image_litert = LiteRTClassifier(model_content=image_tflite, num_threads=1)
    text_litert = LiteRTClassifier(model_content=text_tflite, num_threads=1)

    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((1, size, size, 3)).astype(np.float32) for _ in range(3)]
    image_diff = max(
        float(
            np.abs(
                _normalised(image_litert.invoke(batch))
                - _normalised(np.asarray(image_model(batch)))
            ).max()
        )
        for batch in batches
    )
    litert_texts = _normalised(np.concatenate([text_litert.invoke(row[None]) for row in packed]))
    text_diff = float(np.abs(litert_texts - label_embeddings).max())
    for what, diff in (("image", image_diff), ("text", text_diff)):
        if diff >= tolerance:
            raise ModelRegistrationError(
                f"LiteRT and Keras disagree by {diff:.2e} on the {what} embeddings (the limit "
                f"is {tolerance:.0e}); the model was not registered."
            )
    logit_scale = float(np.exp(np.asarray(backbone.clip_head.logit_scale)))
    return ConvertedClip(
        image_tflite=image_tflite,
        text_tflite=text_tflite,
        label_embeddings=label_embeddings.astype(np.float32),
        logit_scale=logit_scale,
        metrics={
            "parity_max_abs_diff": image_diff,
            "text_parity_max_abs_diff": text_diff,
            "litert_invoke_ms_median": median_ms(lambda: image_litert.invoke(batches[0])),
            "text_invoke_ms_median": median_ms(lambda: text_litert.invoke(packed[:1])),
            "outputs": "zero_shot",
        },
    )


def _labels_checked(labels: list[str], template: str) -> list[str]:
    if "{}" not in template:
        raise ModelRegistrationError(f"The template {template!r} has no '{{}}' for the label.")
    labels = [label.strip() for label in labels]
    if not labels or not all(labels):
        raise ModelRegistrationError("A zero-shot model needs at least one label, none empty.")
    if len(set(labels)) != len(labels):
        raise ModelRegistrationError("The labels must be distinct.")
    return labels


def zero_shot_register(
    *,
    preset: str = "",
    checkpoint: ClipCheckpoint | None = None,
    name: str,
    labels: list[str],
    template: str = DEFAULT_TEMPLATE,
    stage: str = ModelVersion.Stage.STAGING,
    source: str = "",
    tolerance: float = PARITY_TOLERANCE,
    metrics: dict | None = None,
) -> ModelVersion:
    """Register a CLIP preset (or a ``checkpoint`` loaded elsewhere) as the next version of
    ``name``, of kind ``zero_shot``; ``metrics`` are added to the version's own.

    ``labels`` are the version's own labels, each put into ``template`` ("{}" marks the label)
    to make its prompt. Stores the backbone (.keras, for retraining), both encoders as LiteRT,
    the tokenizer's vocabulary and merges, and the prompts' L2-normalised embeddings. Raises
    ModelRegistrationError when the preset cannot be loaded, converted or checked (nothing is
    registered then).
    """
    labels = _labels_checked(labels, template)
    if checkpoint is None:
        checkpoint = clip_checkpoint_load(preset=preset)
    converted = clip_convert(
        checkpoint=checkpoint,
        prompts=[template.replace("{}", label) for label in labels],
        tolerance=tolerance,
    )
    with tempfile.TemporaryDirectory() as workdir:
        keras_path = Path(workdir) / "clip_backbone.keras"
        checkpoint.backbone.save(keras_path)
        stored_source = artifact_put_file(path=keras_path, suffix=".keras")
    embeddings = io.BytesIO()
    np.save(embeddings, converted.label_embeddings, allow_pickle=False)
    image = artifact_put_bytes(data=converted.image_tflite, suffix=".tflite")
    stored = {
        "text_encoder": artifact_put_bytes(data=converted.text_tflite, suffix=".tflite"),
        "vocabulary": artifact_put_bytes(
            data=json.dumps(checkpoint.vocabulary, ensure_ascii=False).encode(), suffix=".json"
        ),
        "merges": artifact_put_bytes(
            data="\n".join(checkpoint.merges).encode("utf-8"), suffix=".txt"
        ),
        "label_embeddings": artifact_put_bytes(data=embeddings.getvalue(), suffix=".npy"),
    }
    model_version = model_version_create(
        name=name,
        kind=ModelVersion.Kind.ZERO_SHOT,
        source_format=ModelVersion.Format.KERAS,
        source_artifact=stored_source.name,
        source_sha256=stored_source.sha256,
        artifact=image.name,
        artifact_sha256=image.sha256,
        artifact_size=image.size,
        labels=labels,
        input_size=checkpoint.input_size,
        preprocessing=dict(CLIP_PREPROCESSING),
        metrics={**converted.metrics, **(metrics or {})},
        source=source or f"KerasHub CLIP preset {preset}",
        zero_shot={
            "template": template,
            "logit_scale": converted.logit_scale,
            "context_length": CONTEXT_LENGTH,
            "pad_token_id": checkpoint.pad_token_id,
            "embedding_dim": int(converted.label_embeddings.shape[1]),
            **{
                part: {"artifact": artifact.name, "sha256": artifact.sha256}
                for part, artifact in stored.items()
            },
        },
    )
    logger.info(
        "Registered %s (image parity %s, text parity %s)",
        model_version,
        converted.metrics["parity_max_abs_diff"],
        converted.metrics["text_parity_max_abs_diff"],
    )
    if stage == ModelVersion.Stage.PRODUCTION:
        model_version = model_version_promote(model_version=model_version)
    elif stage == ModelVersion.Stage.ARCHIVED:
        model_version = model_version_archive(model_version=model_version)
    return model_version
