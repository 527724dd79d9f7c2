"""Registering a ``multi_task`` Keras model: LiteRT conversion with parity on both heads.

The Keras model takes one image and answers ``{"category": softmax, "tags": sigmoid}``. Its
flat buffer keeps both heads under those names in its serving signature, so that one invoke
answers both (see ``classification.serving.multi_task``).
"""

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings

from classification.exceptions import ModelRegistrationError
from classification.models import ModelVersion
from classification.registry.conversion import _tensorflow, artifact_format, tflite_convert
from classification.registry.pipeline import (
    PARITY_TOLERANCE,
    Artifact,
    Parity,
    VersionRecord,
    preprocessing_input_range,
    preprocessing_with_defaults,
    version_register,
)
from classification.serving.multi_task import HEADS, LiteRTHeads, multi_task_shape_check


def multi_task_convert(*, path: Path) -> tuple[bytes, int, object]:
    """(flat buffer, input size, Keras model) of the multi-task ``.keras`` file at ``path``.

    Raises ModelRegistrationError when it cannot be loaded or converted, or lacks a head.
    """
    tf = _tensorflow()
    try:
        model = tf.keras.models.load_model(str(path), compile=False)
        tflite = tflite_convert(tf.lite.TFLiteConverter.from_keras_model(model))
    except Exception as exc:
        raise ModelRegistrationError(f"TensorFlow could not load or convert {path}: {exc}") from exc
    if sorted(model.output_names) != sorted(HEADS):
        raise ModelRegistrationError(
            f"{path} must answer a dict with the heads {HEADS}, not {model.output_names}."
        )
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3 or not shape[1]:
        raise ModelRegistrationError(f"{path} takes {shape}; only square RGB images are served.")
    return tflite, int(shape[1]), model


def heads_by_name(*, model: object, outputs: object) -> dict:
    """A Keras model's outputs by head name, whether it answers a dict or a list."""
    if isinstance(outputs, dict):
        return outputs
    return dict(zip(model.output_names, outputs, strict=True))  # type: ignore[attr-defined, call-overload]


def multi_task_parity(
    *,
    model: object,
    heads: LiteRTHeads,
    input_range: tuple[float, float],
    samples: int = 4,
    seed: int = 0,
    timing_runs: int = 20,
) -> dict:
    """Largest LiteRT-vs-Keras difference per head on random inputs in ``input_range``, and
    the median invoke time (batch 1) in milliseconds."""
    size = heads.input_shape[1]
    rng = np.random.default_rng(seed)
    low, high = input_range
    batch = rng.uniform(low, high, size=(samples, size, size, 3)).astype(np.float32)
    reference = heads_by_name(model=model, outputs=model(batch, training=False))  # type: ignore[operator]
    differences = {}
    for head in HEADS:
        litert = np.concatenate(
            [heads.invoke_heads(batch[i : i + 1])[head] for i in range(samples)]
        )
        differences[head] = float(np.abs(np.asarray(reference[head]) - litert).max())
    timings = []
    for _ in range(timing_runs):
        started = time.perf_counter()
        heads.invoke_heads(batch[:1])
        timings.append((time.perf_counter() - started) * 1000)
    return {"max_abs_diff": differences, "invoke_ms_median": statistics.median(timings)}


@dataclass(frozen=True)
class ConvertedMultiTask:
    tflite: bytes
    input_size: int
    model: Any  # the Keras model, for the parity check
    heads: LiteRTHeads


class MultiTaskRegistration:
    """The ``multi_task`` kind of the registration pipeline."""

    kind = ModelVersion.Kind.MULTI_TASK

    def __init__(
        self,
        *,
        artifact_path: Path,
        labels: list[str],
        tag_labels: list[str],
        tag_thresholds: list[float],
        preprocessing: dict | None = None,
    ) -> None:
        self.artifact_path = Path(artifact_path)
        if not self.artifact_path.exists():
            raise ModelRegistrationError(f"{self.artifact_path} does not exist.")
        if artifact_format(self.artifact_path) != ModelVersion.Format.KERAS:
            raise ModelRegistrationError("A multi-task model is registered from a Keras file.")
        if len(tag_thresholds) != len(tag_labels) or not all(0 <= t <= 1 for t in tag_thresholds):
            raise ModelRegistrationError(
                f"Give one threshold in [0, 1] per tag label: {tag_thresholds} for {tag_labels}."
            )
        self.labels = list(labels)
        self.tag_labels = list(tag_labels)
        self.tag_thresholds = [float(t) for t in tag_thresholds]
        self.preprocessing = preprocessing_with_defaults(preprocessing)

    def convert(self) -> ConvertedMultiTask:
        tflite, input_size, model = multi_task_convert(path=self.artifact_path)
        heads = LiteRTHeads(model_content=tflite, num_threads=settings.LITERT_NUM_THREADS)
        multi_task_shape_check(
            heads=heads,
            input_size=input_size,
            labels=self.labels,
            tag_labels=self.tag_labels,
            name=self.artifact_path.name,
        )
        return ConvertedMultiTask(tflite=tflite, input_size=input_size, model=model, heads=heads)

    def parity_check(self, converted: ConvertedMultiTask) -> Parity:
        report = multi_task_parity(
            model=converted.model,
            heads=converted.heads,
            input_range=preprocessing_input_range(self.preprocessing),
        )
        per_head = report["max_abs_diff"]
        return Parity(
            reference="TensorFlow",
            differences={f"{head} head": difference for head, difference in per_head.items()},
            metrics={
                "parity_max_abs_diff": max(per_head.values()),
                "parity_max_abs_diff_per_head": per_head,
                "litert_invoke_ms_median": round(report["invoke_ms_median"], 3),
                "litert_num_threads": settings.LITERT_NUM_THREADS,
                "outputs": "probabilities",
            },
        )

    def describe(self, converted: ConvertedMultiTask, *, workdir: Path) -> VersionRecord:
        return VersionRecord(
            source_format=ModelVersion.Format.KERAS,
            source_artifact=Artifact(self.artifact_path),
            artifact=Artifact(converted.tflite, suffix=".tflite"),
            labels=self.labels,
            input_size=converted.input_size,
            tag_labels=self.tag_labels,
            fields={"tag_thresholds": self.tag_thresholds},
        )


def multi_task_version_register(
    *,
    artifact_path: Path,
    name: str,
    labels: list[str],
    tag_labels: list[str],
    tag_thresholds: list[float],
    preprocessing: dict | None = None,
    stage: str = ModelVersion.Stage.STAGING,
    source: str = "",
    tolerance: float = PARITY_TOLERANCE,
) -> ModelVersion:
    """Store, convert and register a multi-task Keras model as the next version of ``name``.

    Both heads must agree between LiteRT and Keras within ``tolerance`` on random inputs over
    the preprocessing's range, the heads must have one output per label and per tag label, and
    every threshold must be in [0, 1]. Raises ModelRegistrationError (nothing registered then).
    """
    registration = MultiTaskRegistration(
        artifact_path=artifact_path,
        labels=labels,
        tag_labels=tag_labels,
        tag_thresholds=tag_thresholds,
        preprocessing=preprocessing,
    )
    return version_register(
        registration=registration, name=name, stage=stage, source=source, tolerance=tolerance
    )
