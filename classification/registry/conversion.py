"""TensorFlow's part: load a Keras or SavedModel artifact, convert it to LiteRT, check parity.

TensorFlow is imported only inside these functions: serving never loads it.
"""

import contextlib
import io
import logging
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from classification.exceptions import ModelRegistrationError
from classification.models import ModelVersion
from classification.serving.litert import LiteRTClassifier, softmax

Reference = Callable[[np.ndarray], np.ndarray]

logger = logging.getLogger(__name__)


def _tensorflow() -> ModuleType:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # here, not at the top: TensorFlow stays out of serving processes

    return tf


def tflite_convert(converter: Any) -> bytes:
    """``converter.convert()`` without the SavedModel signature Keras prints (hundreds of lines
    of TensorSpecs on standard output), which is logged at DEBUG instead."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        content = converter.convert()
    if printed.getvalue():
        logger.debug("TensorFlow's conversion said: %s", printed.getvalue())
    return bytes(content)


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


def _saved_model_tags(path: Path) -> list[str] | None:
    # The TF1 Hub format keeps its graph under the empty tag set, which is what hub.load (and
    # so hub.KerasLayer) loads; other SavedModels load with TensorFlow's default tags.
    return [] if (path / "tfhub_module.pb").exists() else None


def _serving_signature(loaded: Any, path: Path) -> Any:
    """``serving_default``, else the TF1 Hub format's ``default``, else the only signature."""
    signatures = dict(loaded.signatures)
    for key in ("serving_default", "default"):
        if key in signatures:
            return signatures[key]
    if len(signatures) == 1:
        return next(iter(signatures.values()))
    raise ModelRegistrationError(
        f"{path} has no serving_default or default signature to serve "
        f"(it has {sorted(signatures) or 'none'})."
    )


def _served_output(outputs: dict[str, Any], path: Path) -> str:
    """The signature output to serve: the only one, else ``default`` (hub.KerasLayer's)."""
    if len(outputs) == 1:
        return next(iter(outputs))
    if "default" in outputs:
        return "default"
    raise ModelRegistrationError(
        f"{path}'s signature has outputs {sorted(outputs)}; one of them must be called "
        "'default' to say which are the class scores."
    )


def _saved_model_function(
    tf: ModuleType, path: Path, *, input_size: int | None
) -> tuple[Any, Any, tuple]:
    """One tf.function over the SavedModel's serving signature: one image batch in, one
    score tensor out. Returns (function, loaded object, input shape)."""
    loaded = tf.saved_model.load(str(path), tags=_saved_model_tags(path))
    signature = _serving_signature(loaded, path)
    inputs = signature.structured_input_signature[1]
    if len(inputs) != 1:
        raise ModelRegistrationError(
            f"{path}'s signature takes {sorted(inputs)}; only models with one image input "
            "are served."
        )
    ((input_name, spec),) = inputs.items()
    if spec.dtype != tf.float32:
        raise ModelRegistrationError(
            f"{path} takes {spec.dtype.name} input; only float32 models are served."
        )
    output = _served_output(signature.structured_outputs, path)
    shape = tuple(spec.shape)
    if len(shape) == 4 and shape[1] is None and shape[2] is None and input_size:
        # Hub image models may accept any size; serve them at the size their card states.
        shape = (shape[0], input_size, input_size, shape[3])

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name=input_name)])
    def serve(images: Any) -> Any:
        return signature(**{input_name: images})[output]

    return serve, loaded, shape


def model_convert(
    *, path: Path, source_format: str, input_size: int | None = None
) -> ConvertedModel:
    """Convert the artifact at ``path`` to a LiteRT flat buffer (a .tflite is taken as it is).

    A SavedModel is served through ``serving_default`` (TF1 Hub format: ``default`` under the
    empty tag set) and, when that returns a dict, its only output or else ``default``.
    ``input_size`` fixes the image size of a model that accepts any.
    """
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
            serve, loaded, shape = _saved_model_function(tf, path, input_size=input_size)
            converter = tf.lite.TFLiteConverter.from_concrete_functions(
                [serve.get_concrete_function()], loaded
            )

            def reference(batch: np.ndarray) -> np.ndarray:
                return np.asarray(serve(tf.constant(batch)))

        tflite = tflite_convert(converter)
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
    *,
    converted: ConvertedModel,
    input_range: tuple[float, float] = (-1.0, 1.0),
    num_threads: int = 1,
    samples: int = 4,
    seed: int = 0,
    timing_runs: int = 20,
) -> ParityReport:
    """Compare LiteRT with TensorFlow on random inputs in ``input_range`` (the range the
    model's preprocessing produces), and time LiteRT's invoke on ``num_threads`` threads."""
    size = converted.input_size
    classifier = LiteRTClassifier(model_content=converted.tflite, num_threads=num_threads)
    rng = np.random.default_rng(seed)
    low, high = input_range
    batches = [
        rng.uniform(low, high, size=(1, size, size, 3)).astype(np.float32) for _ in range(samples)
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
