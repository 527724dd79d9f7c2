"""Registering a CLIP checkpoint as a ``zero_shot`` model version (KerasHub and TensorFlow's part).

KerasHub and TensorFlow are imported only inside these functions: serving never loads them.
The checkpoint is a KerasHub preset, by name (downloaded from its hub, online only) or as a
local preset folder (what ``CLIPBackbone.save_to_preset`` and ``CLIPTokenizer.save_to_preset``
write), or a ``ClipCheckpoint`` that another source built. Both towers are converted to LiteRT
and checked against Keras; the registration labels' prompts are embedded once here and stored
with the version.
"""

import io
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from classification.exceptions import ModelRegistrationError
from classification.models import ModelVersion
from classification.registry.conversion import _tensorflow, tflite_convert
from classification.registry.pipeline import (
    PARITY_TOLERANCE,
    Artifact,
    Parity,
    VersionRecord,
    version_register,
)
from classification.serving.litert import LiteRTClassifier
from classification.serving.zero_shot import CONTEXT_LENGTH, ClipTokenizer

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
    import keras_hub  # here, not at the top: KerasHub stays out of serving processes

    return keras_hub


@dataclass(frozen=True)
class ClipCheckpoint:
    """A loaded CLIP: the Keras backbone and its tokenizer's vocabulary and merges.

    ``clip_checkpoint_load`` makes one from a KerasHub preset; a source that builds the KerasHub
    ``CLIPBackbone`` some other way (from another hub's weights, say) makes its own and gives it
    to ``zero_shot_register(checkpoint=...)``.
    """

    backbone: Any  # a KerasHub CLIPBackbone
    vocabulary: dict[str, int]
    merges: list[str]
    pad_token_id: int
    # KerasHub's CLIPTokenizer, to check ours against at registration; None: the registration
    # makes one from ``vocabulary`` and ``merges``.
    keras_tokenizer: Any = None
    # Where the weights came from: the version's source when the registration names none.
    source: str = ""

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
        source=f"KerasHub CLIP preset {preset}",
    )


def _litert(model: Any) -> bytes:
    tf = _tensorflow()
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
    checkpoint: ClipCheckpoint
    image_model: Any  # the Keras towers, for the parity check
    text_model: Any
    image_tflite: bytes
    text_tflite: bytes
    packed: np.ndarray  # the prompts' token ids, (prompts, CONTEXT_LENGTH)
    label_embeddings: np.ndarray  # (labels, dim), L2-normalised, from Keras' text encoder
    logit_scale: float


def _labels_checked(labels: list[str], template: str) -> list[str]:
    if "{}" not in template:
        raise ModelRegistrationError(f"The template {template!r} has no '{{}}' for the label.")
    labels = [label.strip() for label in labels]
    if not labels or not all(labels):
        raise ModelRegistrationError("A zero-shot model needs at least one label, none empty.")
    if len(set(labels)) != len(labels):
        raise ModelRegistrationError("The labels must be distinct.")
    return labels


class ZeroShotRegistration:
    """The ``zero_shot`` kind of the registration pipeline: a CLIP and the version's labels.

    The CLIP is a KerasHub ``preset`` (loaded when the pipeline converts) or a ``checkpoint``
    loaded elsewhere: exactly one of them. Both towers are converted to LiteRT; the labels'
    prompts (``template`` with "{}" for the label) are embedded once by Keras and stored.
    """

    kind = ModelVersion.Kind.ZERO_SHOT

    def __init__(
        self,
        *,
        labels: list[str],
        template: str = DEFAULT_TEMPLATE,
        preset: str | None = None,
        checkpoint: ClipCheckpoint | None = None,
    ) -> None:
        if (preset is None) == (checkpoint is None):
            raise ModelRegistrationError("A zero-shot model needs a preset or a checkpoint.")
        self.labels = _labels_checked(labels, template)
        self.template = template
        self.preprocessing = dict(CLIP_PREPROCESSING)
        self.preset = preset
        self.checkpoint = checkpoint

    @property
    def prompts(self) -> list[str]:
        return [self.template.replace("{}", label) for label in self.labels]

    def convert(self) -> ConvertedClip:
        """Both towers as LiteRT, and the prompts' embeddings computed by Keras."""
        import keras  # here, not at the top: Keras stays out of serving processes

        checkpoint = self.checkpoint or clip_checkpoint_load(preset=str(self.preset))
        backbone = checkpoint.backbone
        size = checkpoint.input_size
        images = keras.Input((size, size, 3), name="images")
        image_model = keras.Model(images, backbone.get_vision_embeddings(images))
        token_ids = keras.Input((CONTEXT_LENGTH,), dtype="int32", name="token_ids")
        text_model = keras.Model(token_ids, backbone.get_text_embeddings(token_ids))

        tokenizer = ClipTokenizer(vocabulary=checkpoint.vocabulary, merges=checkpoint.merges)
        packed = np.concatenate(
            [
                tokenizer.pack(tokenizer.tokenize(prompt), pad_token_id=checkpoint.pad_token_id)
                for prompt in self.prompts
            ]
        )
        label_embeddings = _normalised(np.asarray(text_model.predict(packed, verbose=0)))
        return ConvertedClip(
            checkpoint=checkpoint,
            image_model=image_model,
            text_model=text_model,
            image_tflite=_litert(image_model),
            text_tflite=_litert(text_model),
            packed=packed,
            label_embeddings=label_embeddings.astype(np.float32),
            logit_scale=float(np.exp(np.asarray(backbone.clip_head.logit_scale))),
        )

    def _tokenizer_check(self, checkpoint: ClipCheckpoint) -> None:
        """Our tokenizer (serving's) must give KerasHub's token ids on every prompt."""
        keras_tokenizer = checkpoint.keras_tokenizer or _keras_hub().models.CLIPTokenizer(
            vocabulary=checkpoint.vocabulary, merges=checkpoint.merges
        )
        tokenizer = ClipTokenizer(vocabulary=checkpoint.vocabulary, merges=checkpoint.merges)
        for prompt in self.prompts:
            ours = tokenizer.tokenize(prompt)
            theirs = [int(i) for i in np.asarray(keras_tokenizer(prompt)).reshape(-1)]
            if ours != theirs:
                raise ModelRegistrationError(
                    f"The tokenizer disagrees with KerasHub's on {prompt!r}: {ours} != {theirs}."
                )

    def parity_check(self, converted: ConvertedClip) -> Parity:
        """On random standardised images, LiteRT's normalised image embeddings against Keras';
        on the prompts, our tokenizer against KerasHub's (raises when they differ) and LiteRT's
        text embeddings against Keras' (which are the ones stored)."""
        self._tokenizer_check(converted.checkpoint)
        image_litert = LiteRTClassifier(model_content=converted.image_tflite, num_threads=1)
        text_litert = LiteRTClassifier(model_content=converted.text_tflite, num_threads=1)
        size = converted.checkpoint.input_size
        rng = np.random.default_rng(0)
        batches = [rng.standard_normal((1, size, size, 3)).astype(np.float32) for _ in range(3)]
        image_diff = max(
            float(
                np.abs(
                    _normalised(image_litert.invoke(batch))
                    - _normalised(np.asarray(converted.image_model(batch)))
                ).max()
            )
            for batch in batches
        )
        packed = converted.packed
        litert_texts = _normalised(
            np.concatenate([text_litert.invoke(row[None]) for row in packed])
        )
        text_diff = float(np.abs(litert_texts - converted.label_embeddings).max())
        return Parity(
            reference="Keras",
            differences={"image embeddings": image_diff, "text embeddings": text_diff},
            metrics={
                "parity_max_abs_diff": image_diff,
                "text_parity_max_abs_diff": text_diff,
                "litert_invoke_ms_median": median_ms(lambda: image_litert.invoke(batches[0])),
                "text_invoke_ms_median": median_ms(lambda: text_litert.invoke(packed[:1])),
                "outputs": "zero_shot",
            },
        )

    def describe(self, converted: ConvertedClip, *, workdir: Path) -> VersionRecord:
        """The backbone (.keras, for retraining), both encoders, the tokenizer's vocabulary and
        merges, and the prompts' L2-normalised embeddings (format in serving/zero_shot.py)."""
        checkpoint = converted.checkpoint
        keras_path = workdir / "clip_backbone.keras"
        checkpoint.backbone.save(keras_path)
        embeddings = io.BytesIO()
        np.save(embeddings, converted.label_embeddings, allow_pickle=False)
        vocabulary = json.dumps(checkpoint.vocabulary, ensure_ascii=False).encode()
        return VersionRecord(
            source_format=ModelVersion.Format.KERAS,
            source_artifact=Artifact(keras_path),
            artifact=Artifact(converted.image_tflite, suffix=".tflite"),
            labels=self.labels,
            input_size=checkpoint.input_size,
            source=checkpoint.source,
            fields={
                "zero_shot": {
                    "template": self.template,
                    "logit_scale": converted.logit_scale,
                    "context_length": CONTEXT_LENGTH,
                    "pad_token_id": checkpoint.pad_token_id,
                    "embedding_dim": int(converted.label_embeddings.shape[1]),
                    "text_encoder": Artifact(converted.text_tflite, suffix=".tflite"),
                    "vocabulary": Artifact(vocabulary, suffix=".json"),
                    "merges": Artifact("\n".join(checkpoint.merges).encode(), suffix=".txt"),
                    "label_embeddings": Artifact(embeddings.getvalue(), suffix=".npy"),
                }
            },
        )


def zero_shot_register(
    *,
    preset: str | None = None,
    checkpoint: ClipCheckpoint | None = None,
    name: str,
    labels: list[str],
    template: str = DEFAULT_TEMPLATE,
    stage: str = ModelVersion.Stage.STAGING,
    source: str = "",
    tolerance: float = PARITY_TOLERANCE,
    metrics: dict | None = None,
) -> ModelVersion:
    """Register a CLIP as the next version of ``name``, of kind ``zero_shot``.

    The CLIP is a KerasHub ``preset`` (a name or a local folder) or a ``checkpoint`` loaded
    elsewhere: exactly one of them. ``labels`` are the version's own labels, each put into
    ``template`` ("{}" marks the label) to make its prompt. Stores the backbone (.keras, for
    retraining), both encoders as LiteRT, the tokenizer's vocabulary and merges, and the
    prompts' L2-normalised embeddings; ``metrics`` (the checks a source ran itself) are added
    to the version's own. Raises ModelRegistrationError when the checkpoint cannot be loaded,
    converted or checked (nothing is registered then).
    """
    registration = ZeroShotRegistration(
        labels=labels, template=template, preset=preset or None, checkpoint=checkpoint
    )
    return version_register(
        registration=registration,
        name=name,
        stage=stage,
        source=source,
        tolerance=tolerance,
        metrics=metrics,
    )
