"""Quantized versions: a registered float classifier converted to full-integer (int8) LiteRT.

The float version's Keras source is cut before its softmax, so the model ends at the logits
and serving applies the softmax in float (a quantized softmax answers in steps of 1/256: small
probabilities vanish). TensorFlow's converter quantizes every op but the last layer
(``FLOAT_OPS``; all of them on request, with int8 input and output tensors then), weights per
channel; ranges come from a representative dataset of real photos prepared with the version's
own preprocessing (random crops and mirror images of each). Dynamic-range quantization is not
offered: on our CPUs it was slower than float.

The int8 version is registered under its own name (``<name>-int8``) with the float version's
labels and preprocessing, so requests can ask for either; its metrics record what it was made
from, its calibration and its fidelity report against the float version
(``fidelity.quantization_fidelity``) on photos it was not calibrated on.
"""

import contextlib
import io
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from PIL import Image

from classification.exceptions import ModelRegistrationError
from classification.models import ModelVersion
from classification.registry.conversion import (
    ConvertedModel,
    _tensorflow,
    parity_check,
    tflite_convert,
)
from classification.registry.fidelity import fidelity_recorded, quantization_fidelity
from classification.registry.photos import Photo
from classification.registry.pipeline import Artifact, Parity, VersionRecord, version_register
from classification.registry.versions import model_version_stage_put
from classification.serving.imaging import DRAFT_MARGIN_OPTION, image_preprocess
from classification.store import artifact_path, artifact_verify

logger = logging.getLogger(__name__)

INT8_SUFFIX = "-int8"
# Representative inputs the converter measures ranges on: enough crops that every photo
# is seen several ways, few enough that a conversion takes seconds, not minutes.
DEFAULT_CALIBRATION_SAMPLES = 200
# The ops left in float: the classifier's last layer (its logits). Quantized, the logits come in
# steps of about 0.07, which moved a confident answer's probability by up to 0.09 on the wheel
# photos; in float the move is 0.02 for 1.3 M of the model's 400 M multiply-adds.
FLOAT_OPS = ("FULLY_CONNECTED",)


def int8_name(name: str) -> str:
    """The registered name of the int8 versions of ``name``."""
    return f"{name}{INT8_SUFFIX}"


def int8_version_exists(*, fp32: ModelVersion) -> bool:
    """Whether an int8 version was made from ``fp32`` (whatever its stage)."""
    return ModelVersion.objects.filter(
        name=int8_name(fp32.name),
        metrics__quantized_from__name=fp32.name,
        metrics__quantized_from__version=fp32.version,
    ).exists()


def _logits_model(model: Any) -> Any:
    """``model`` up to its logits: without a final Softmax layer, or with a final Dense
    layer's softmax activation replaced by none (same weights)."""
    keras = _tensorflow().keras
    last = model.layers[-1]
    if isinstance(last, keras.layers.Softmax) or (
        isinstance(last, keras.layers.Activation) and last.get_config()["activation"] == "softmax"
    ):
        return keras.Model(model.inputs, last.input, name=f"{model.name}_logits")
    if isinstance(last, keras.layers.Dense) and last.get_config()["activation"] == "softmax":
        config = {**last.get_config(), "activation": "linear", "name": f"{last.name}_logits"}
        dense = keras.layers.Dense.from_config(config)
        outputs = dense(last.input)
        dense.set_weights(last.get_weights())
        return keras.Model(model.inputs, outputs, name=f"{model.name}_logits")
    return model  # already logits (the registry recorded "outputs": "logits")


def calibration_batches(
    *,
    photos: Sequence[Photo],
    input_size: int,
    preprocessing: dict,
    samples: int,
    seed: int = 0,
) -> Iterator[list[np.ndarray]]:
    """``samples`` model inputs from ``photos``, round robin: each photo first whole (as
    served), then random crops of 40-100% of each side, half of them mirrored."""
    rng = np.random.default_rng(seed)
    for sample in range(samples):
        image = photos[sample % len(photos)].open_rgb()
        if sample >= len(photos):
            width, height = image.size
            fraction = rng.uniform(0.4, 1.0)
            keep_w, keep_h = max(1, int(width * fraction)), max(1, int(height * fraction))
            left = int(rng.integers(0, width - keep_w + 1))
            top = int(rng.integers(0, height - keep_h + 1))
            image = image.crop((left, top, left + keep_w, top + keep_h))
            if rng.random() < 0.5:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        yield [image_preprocess(image=image, input_size=input_size, preprocessing=preprocessing)]


def int8_convert(
    *,
    keras_path: Path,
    input_size: int,
    preprocessing: dict,
    photos: Sequence[Photo],
    samples: int = DEFAULT_CALIBRATION_SAMPLES,
    float_ops: Sequence[str] = FLOAT_OPS,
) -> bytes:
    """The Keras classifier at ``keras_path`` as a full-integer LiteRT flat buffer ending at
    its logits, calibrated on ``photos``; the ops named in ``float_ops`` (TFLite builtin names)
    stay in float. Raises ModelRegistrationError."""
    if not photos:
        raise ModelRegistrationError("No calibration photos: an int8 conversion needs some.")
    tf = _tensorflow()

    def representative(count: int) -> Callable[[], Iterator[list[np.ndarray]]]:
        return lambda: calibration_batches(
            photos=photos, input_size=input_size, preprocessing=preprocessing, samples=count
        )

    try:
        model = _logits_model(tf.keras.models.load_model(str(keras_path), compile=False))
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative(samples)
        converter.inference_input_type = tf.int8
        if not float_ops:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_output_type = tf.int8
            return tflite_convert(converter)
        # The converter's selective quantization: every op but those named is int8; those take
        # dequantized (float) inputs. The model keeps float input and output tensors (quantized
        # inside): quantizing them too ("fully_quantize") measured 5x slower. Its debug set is
        # unused by the model it returns.
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,
        ]
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter,
                debug_dataset=representative(1),
                debug_options=tf.lite.experimental.QuantizationDebugOptions(
                    denylisted_ops=list(float_ops)
                ),
            )
            content = debugger.get_nondebug_quantized_model()
        logger.debug("TensorFlow's conversion said: %s", printed.getvalue())
        return bytes(content)
    except Exception as exc:
        raise ModelRegistrationError(f"TensorFlow could not quantize {keras_path}: {exc}") from exc


def _source_notice(fp32: ModelVersion) -> str:
    prefix = f"int8 of {fp32.name} v{fp32.version}. "
    limit = ModelVersion._meta.get_field("source").max_length or 500
    return (prefix + fp32.source)[:limit]


class Int8Registration:
    """The int8 version of a float ``classifier`` version, as the registration pipeline
    registers it (a ``classifier`` like its source)."""

    kind = ModelVersion.Kind.CLASSIFIER

    def __init__(
        self,
        *,
        fp32: ModelVersion,
        calibration: Sequence[Photo],
        calibration_set: str,
        samples: int = DEFAULT_CALIBRATION_SAMPLES,
        float_ops: Sequence[str] = FLOAT_OPS,
    ) -> None:
        if fp32.kind != ModelVersion.Kind.CLASSIFIER:
            raise ModelRegistrationError(f"{fp32} is a {fp32.kind} model; only classifiers are.")
        if fp32.source_format != ModelVersion.Format.KERAS:
            raise ModelRegistrationError(
                f"{fp32} was registered from a {fp32.source_format} artifact; int8 versions are "
                "made from Keras sources."
            )
        if fp32.metrics.get("quantization"):
            raise ModelRegistrationError(f"{fp32} is itself quantized.")
        self.fp32 = fp32
        self.calibration = list(calibration)
        self.calibration_set = calibration_set
        self.samples = samples
        self.float_ops = tuple(float_ops)
        # All but the JPEG draft margin: it was validated for the float model, and the int8
        # model answers otherwise (imagenet-lite0-int8 missed the rule at the float version's
        # margin, docs/performance.md). It decodes JPEGs whole unless a margin is recorded for
        # its model (model_version_quantize).
        self.preprocessing = {
            key: value for key, value in fp32.preprocessing.items() if key != DRAFT_MARGIN_OPTION
        }

    def convert(self) -> ConvertedModel:
        artifact_verify(name=self.fp32.source_artifact, sha256=self.fp32.source_sha256)
        self.keras_path = artifact_path(self.fp32.source_artifact)
        content = int8_convert(
            keras_path=self.keras_path,
            input_size=self.fp32.input_size,
            preprocessing=self.preprocessing,
            photos=self.calibration,
            samples=self.samples,
            float_ops=self.float_ops,
        )
        return ConvertedModel(
            tflite=content,
            input_size=self.fp32.input_size,
            num_outputs=len(self.fp32.labels),
            reference=None,
        )

    def parity_check(self, converted: ConvertedModel) -> Parity:
        # Not a parity check: int8 differs from float by design. Its fidelity on real photos
        # is measured after registration; here only the invoke time is.
        report = parity_check(converted=converted, num_threads=settings.LITERT_NUM_THREADS)
        return Parity(
            reference="the float version",
            differences={"probabilities": None},
            metrics={
                "litert_invoke_ms_median": round(report.invoke_ms_median, 3),
                "litert_num_threads": settings.LITERT_NUM_THREADS,
                "outputs": "logits",
                "quantized_from": {"name": self.fp32.name, "version": self.fp32.version},
                "quantization": {
                    "scheme": "int8, weights per channel"
                    + (", float ops: " + ", ".join(self.float_ops) if self.float_ops else ""),
                    "float_ops": list(self.float_ops),
                    "converter": "tf.lite.TFLiteConverter",
                    "calibration_set": self.calibration_set,
                    "calibration_photos": len(self.calibration),
                    "calibration_samples": self.samples,
                },
            },
        )

    def describe(self, converted: ConvertedModel, *, workdir: Path) -> VersionRecord:
        return VersionRecord(
            source_format=ModelVersion.Format.KERAS,
            source_artifact=Artifact(self.keras_path),
            artifact=Artifact(converted.tflite, suffix=".tflite"),
            labels=list(self.fp32.labels),
            input_size=self.fp32.input_size,
            # The float version's notice (its licences) first; the calibration is in metrics.
            source=_source_notice(self.fp32),
        )


def model_version_quantize(
    *,
    fp32: ModelVersion,
    calibration: Sequence[Photo],
    calibration_set: str,
    held_out: Sequence[Photo],
    held_out_set: str,
    samples: int = DEFAULT_CALIBRATION_SAMPLES,
    float_ops: Sequence[str] = FLOAT_OPS,
    stage: str = ModelVersion.Stage.PRODUCTION,
) -> ModelVersion:
    """Register the int8 version of ``fp32`` as the next version of ``<name>-int8``, with its
    fidelity report on ``held_out`` (photos disjoint from ``calibration``) in its metrics, and
    put it in ``stage``. Raises ModelRegistrationError (nothing is registered then)."""
    calibrated = {photo.path.resolve() for photo in calibration}
    overlap = [photo.name for photo in held_out if photo.path.resolve() in calibrated]
    if overlap:
        raise ModelRegistrationError(
            f"{len(overlap)} held-out photos are also calibration photos ({overlap[0]}, ...)."
        )
    registration = Int8Registration(
        fp32=fp32,
        calibration=calibration,
        calibration_set=calibration_set,
        samples=samples,
        float_ops=float_ops,
    )
    int8 = version_register(registration=registration, name=int8_name(fp32.name))
    fidelity = int8_fidelity_measure(int8=int8, photos=held_out, photo_set=held_out_set)
    margin = fidelity.get("recorded", {}).get("jpeg_draft_margin")
    if margin is not None:
        # Its own draft margin, measured for this model; not its float source's. (The held-out
        # photos are too small for a draft: the report above holds with it.)
        int8.preprocessing = {**int8.preprocessing, DRAFT_MARGIN_OPTION: margin}
        int8.save(update_fields=["preprocessing"])
    return model_version_stage_put(model_version=int8, stage=stage)


def int8_fidelity_measure(
    *, int8: ModelVersion, photos: Sequence[Photo], photo_set: str, store: bool = True
) -> dict:
    """The fidelity report of ``int8`` against the float version it was made from, on
    ``photos`` (which must not be its calibration photos); with ``store``, it replaces the one
    in its metrics. Raises ModelRegistrationError for a version that is not quantized."""
    source = int8.metrics.get("quantized_from")
    fp32 = (
        ModelVersion.objects.filter(name=source["name"], version=source["version"]).first()
        if isinstance(source, dict)
        else None
    )
    if fp32 is None:
        raise ModelRegistrationError(f"{int8} is not an int8 version of a registered version.")
    fidelity = quantization_fidelity(fp32=fp32, int8=int8, photos=photos, photo_set=photo_set)
    if not fidelity["labelled"]:
        # Unlabelled photos (the wheel's) measure agreement only; a report measured on labelled
        # photos for this model answers instead, the local figures kept beside it.
        recorded = fidelity_recorded(fp32=fp32, int8=int8, photos=photos)
        if recorded is not None:
            fidelity = {**recorded, "measured_here": fidelity}
    if store:
        int8.metrics = {**int8.metrics, "fidelity": fidelity}
        int8.save(update_fields=["metrics"])
    logger.info("Fidelity of %s against %s: %s", int8, fp32, fidelity)
    return fidelity
