"""TensorFlow's part: load a Keras or SavedModel artifact, convert it to LiteRT, check parity.

TensorFlow is imported only inside these functions: serving never loads it.
"""

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from classification.exceptions import ModelRegistrationError
from classification.models import ModelVersion
from classification.serving.engine import LiteRTClassifier, softmax

Reference = Callable[[np.ndarray], np.ndarray]


def _tensorflow() -> ModuleType:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def artifact_format(path: Path) -> str:
    """The registry format of the artifact at ``path``, from its name and layout."""
    if path.is_dir() and (path / "saved_model.pb").exists():
        return ModelVersion.Format.SAVED_MODEL
    suffix = path.suffix.lower()
    if suffix in (".keras", ".h5", ".hdf5"):
        return ModelVersion.Format.KERAS
    if suffix == ".tflite":
        return ModelVersion.Format.TFLITE
    raise ModelRegistrationError(
        f"{path} is not a Keras file (.keras, .h5), a SavedModel folder or a .tflite file."
    )


@dataclass(frozen=True)
class ConvertedModel:
    tflite: bytes
    input_size: int
    num_outputs: int
    reference: Reference | None  # TensorFlow's own computation, for the parity check


def _square_input_size(shape: tuple) -> int:
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3 or not shape[1]:
        raise ModelRegistrationError(
            f"The model takes input of shape {shape}; "
            "only square RGB images (N, S, S, 3) are served."
        )
    return int(shape[1])


def model_convert(*, path: Path, source_format: str) -> ConvertedModel:
    """Convert the artifact at ``path`` to a LiteRT flat buffer (a .tflite is taken as it is)."""
    if source_format == ModelVersion.Format.TFLITE:
        content = path.read_bytes()
        try:
            classifier = LiteRTClassifier(model_content=content, num_threads=1)
        except Exception as exc:
            raise ModelRegistrationError(f"{path} is not a valid LiteRT model: {exc}") from exc
        return ConvertedModel(
            tflite=content,
            input_size=_square_input_size(classifier.input_shape),
            num_outputs=classifier.output_size,
            reference=None,
        )

    tf = _tensorflow()
    try:
        if source_format == ModelVersion.Format.KERAS:
            model = tf.keras.models.load_model(str(path), compile=False)
            shape = tuple(model.input_shape)
            converter = tf.lite.TFLiteConverter.from_keras_model(model)

            def reference(batch: np.ndarray) -> np.ndarray:
                return np.asarray(model(batch, training=False))

        else:
            loaded = tf.saved_model.load(str(path))
            signature = loaded.signatures["serving_default"]
            (spec,) = signature.structured_input_signature[1].values()
            shape = tuple(spec.shape)
            converter = tf.lite.TFLiteConverter.from_saved_model(str(path))

            def reference(batch: np.ndarray) -> np.ndarray:
                (output,) = signature(tf.constant(batch)).values()
                return np.asarray(output)

        tflite = converter.convert()
    except ModelRegistrationError:
        raise
    except Exception as exc:
        raise ModelRegistrationError(f"TensorFlow could not load or convert {path}: {exc}") from exc

    input_size = _square_input_size(shape)
    outputs = reference(np.zeros((1, input_size, input_size, 3), dtype=np.float32))
    return ConvertedModel(
        tflite=tflite,
        input_size=input_size,
        num_outputs=int(outputs.shape[-1]),
        reference=reference,
    )


def outputs_are_logits(outputs: np.ndarray) -> bool:
    """Whether a model's outputs need a softmax (they are not already probabilities)."""
    return bool((outputs < 0).any() or not np.allclose(outputs.sum(axis=-1), 1.0, atol=1e-3))


@dataclass(frozen=True)
class ParityReport:
    max_abs_diff: float | None  # on probabilities; None when there is no TensorFlow reference
    outputs_logits: bool
    invoke_ms_median: float


def parity_check(
    *, converted: ConvertedModel, samples: int = 4, seed: int = 0, timing_runs: int = 20
) -> ParityReport:
    """Compare LiteRT with TensorFlow on random inputs in [-1, 1], and time LiteRT's invoke."""
    size = converted.input_size
    classifier = LiteRTClassifier(model_content=converted.tflite, num_threads=1)
    rng = np.random.default_rng(seed)
    batches = [
        rng.uniform(-1.0, 1.0, size=(1, size, size, 3)).astype(np.float32) for _ in range(samples)
    ]
    litert_outputs = np.concatenate([classifier.invoke(batch) for batch in batches])
    logits = outputs_are_logits(litert_outputs)
    max_abs_diff = None
    if converted.reference is not None:
        tf_outputs = np.concatenate([converted.reference(batch) for batch in batches])
        if logits:
            tf_outputs, litert_outputs = softmax(tf_outputs), softmax(litert_outputs)
        max_abs_diff = float(np.abs(tf_outputs - litert_outputs).max())

    timings = []
    for _ in range(timing_runs):
        started = time.perf_counter()
        classifier.invoke(batches[0])
        timings.append((time.perf_counter() - started) * 1000)
    return ParityReport(
        max_abs_diff=max_abs_diff,
        outputs_logits=logits,
        invoke_ms_median=statistics.median(timings),
    )
