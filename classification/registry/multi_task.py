"""Registering a multi-task Keras model: LiteRT conversion with parity on both heads.

The Keras model takes one image and answers ``{"category": softmax, "tags": sigmoid}``. Its
flat buffer keeps both heads under those names in its serving signature, so that one invoke
answers both (see ``classification.serving.multi_task``).
"""

import logging
import statistics
import time
from pathlib import Path

import numpy as np
from django.conf import settings

from classification.exceptions import ModelRegistrationError
from classification.models import ModelVersion
from classification.registry.conversion import _tensorflow, artifact_format, tflite_convert
from classification.registry.services import (
    PARITY_TOLERANCE,
    _preprocessing_check,
    _source_put,
    model_version_archive,
    model_version_create,
    model_version_promote,
)
from classification.registry.store import artifact_put_bytes
from classification.serving.imaging import DEFAULT_PREPROCESSING
from classification.serving.multi_task import HEADS, LiteRTHeads, multi_task_shape_check

logger = logging.getLogger(__name__)


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
    artifact_path = Path(artifact_path)
    if not artifact_path.exists():
        raise ModelRegistrationError(f"{artifact_path} does not exist.")
    if artifact_format(artifact_path) != ModelVersion.Format.KERAS:
        raise ModelRegistrationError("A multi-task model is registered from a Keras file.")
    if len(tag_thresholds) != len(tag_labels) or not all(0 <= t <= 1 for t in tag_thresholds):
        raise ModelRegistrationError(
            f"Give one threshold in [0, 1] per tag label: {tag_thresholds} for {tag_labels}."
        )
    preprocessing = {**DEFAULT_PREPROCESSING, **(preprocessing or {})}
    _preprocessing_check(preprocessing)
    tflite, input_size, model = multi_task_convert(path=artifact_path)
    heads = LiteRTHeads(model_content=tflite, num_threads=settings.LITERT_NUM_THREADS)
    multi_task_shape_check(
        heads=heads, input_size=input_size, labels=labels, tag_labels=tag_labels, name=name
    )
    low, high = (float(bound) for bound in preprocessing["scale"])
    report = multi_task_parity(model=model, heads=heads, input_range=(low, high))
    worst = max(report["max_abs_diff"].values())
    if worst >= tolerance:
        raise ModelRegistrationError(
            f"LiteRT and TensorFlow disagree by {report['max_abs_diff']} on the heads "
            f"(the limit is {tolerance:.0e}); the model was not registered."
        )

    stored_source = _source_put(path=artifact_path, source_format=ModelVersion.Format.KERAS)
    stored_tflite = artifact_put_bytes(data=tflite, suffix=".tflite")
    model_version = model_version_create(
        name=name,
        kind=ModelVersion.Kind.MULTI_TASK,
        source_format=ModelVersion.Format.KERAS,
        source_artifact=stored_source.name,
        source_sha256=stored_source.sha256,
        artifact=stored_tflite.name,
        artifact_sha256=stored_tflite.sha256,
        artifact_size=stored_tflite.size,
        labels=list(labels),
        tag_labels=list(tag_labels),
        tag_thresholds=[float(t) for t in tag_thresholds],
        input_size=input_size,
        preprocessing=preprocessing,
        metrics={
            "parity_max_abs_diff": worst,
            "parity_max_abs_diff_per_head": report["max_abs_diff"],
            "litert_invoke_ms_median": round(report["invoke_ms_median"], 3),
            "litert_num_threads": settings.LITERT_NUM_THREADS,
            "outputs": "probabilities",
        },
        source=source,
    )
    logger.info("Registered %s (parity per head %s)", model_version, report["max_abs_diff"])
    if stage == ModelVersion.Stage.PRODUCTION:
        model_version = model_version_promote(model_version=model_version)
    elif stage == ModelVersion.Stage.ARCHIVED:
        model_version = model_version_archive(model_version=model_version)
    return model_version
