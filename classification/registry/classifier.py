"""Registering a ``classifier``: a Keras, SavedModel or LiteRT artifact, one score per label.

Keras and SavedModel artifacts are converted to LiteRT by ``conversion``; a ``.tflite`` is taken
as it is (and has no TensorFlow to be checked against).
"""

import tarfile
from pathlib import Path

from django.conf import settings

from classification.exceptions import ModelRegistrationError
from classification.models import ModelVersion
from classification.registry.conversion import ConvertedModel, artifact_format, model_convert
from classification.registry.conversion import parity_check as litert_parity_check
from classification.registry.pipeline import (
    PARITY_TOLERANCE,
    Artifact,
    Parity,
    VersionRecord,
    preprocessing_input_range,
    preprocessing_with_defaults,
    version_register,
)


class ClassifierRegistration:
    """The ``classifier`` kind of the registration pipeline."""

    kind = ModelVersion.Kind.CLASSIFIER

    def __init__(
        self,
        *,
        artifact_path: Path,
        labels: list[str],
        input_size: int | None = None,
        tag_labels: list[str] | None = None,
        preprocessing: dict | None = None,
    ) -> None:
        self.artifact_path = Path(artifact_path)
        if not self.artifact_path.exists():
            raise ModelRegistrationError(f"{self.artifact_path} does not exist.")
        self.labels = list(labels)
        self.input_size = input_size
        self.tag_labels = tag_labels
        self.preprocessing = preprocessing_with_defaults(preprocessing)
        self.source_format = artifact_format(self.artifact_path)

    def convert(self) -> ConvertedModel:
        converted = model_convert(
            path=self.artifact_path, source_format=self.source_format, input_size=self.input_size
        )
        if self.input_size is not None and self.input_size != converted.input_size:
            raise ModelRegistrationError(
                f"The model takes {converted.input_size}x{converted.input_size} images, "
                f"not {self.input_size}."
            )
        if converted.num_outputs != len(self.labels):
            raise ModelRegistrationError(
                f"The model has {converted.num_outputs} outputs but {len(self.labels)} labels "
                "were given."
            )
        return converted

    def parity_check(self, converted: ConvertedModel) -> Parity:
        # Random inputs over the range this version's preprocessing produces, timed on the
        # threads serving uses.
        report = litert_parity_check(
            converted=converted,
            input_range=preprocessing_input_range(self.preprocessing),
            num_threads=settings.LITERT_NUM_THREADS,
        )
        return Parity(
            reference="TensorFlow",
            differences={"probabilities": report.max_abs_diff},
            metrics={
                "parity_max_abs_diff": report.max_abs_diff,
                "litert_invoke_ms_median": round(report.invoke_ms_median, 3),
                "litert_num_threads": settings.LITERT_NUM_THREADS,
                "outputs": "logits" if report.outputs_logits else "probabilities",
            },
        )

    def describe(self, converted: ConvertedModel, *, workdir: Path) -> VersionRecord:
        source = Artifact(self.artifact_path)
        if self.source_format == ModelVersion.Format.SAVED_MODEL:
            archive = workdir / "saved_model.tar"
            with tarfile.open(archive, "w") as tar:
                tar.add(self.artifact_path, arcname="saved_model")
            source = Artifact(archive, suffix=".saved_model.tar")
        return VersionRecord(
            source_format=self.source_format,
            source_artifact=source,
            artifact=Artifact(converted.tflite, suffix=".tflite"),
            labels=self.labels,
            input_size=converted.input_size,
            tag_labels=self.tag_labels,
        )


def model_version_register(
    *,
    artifact_path: Path,
    name: str,
    labels: list[str],
    input_size: int | None = None,
    stage: str = ModelVersion.Stage.STAGING,
    source: str = "",
    tag_labels: list[str] | None = None,
    preprocessing: dict | None = None,
    tolerance: float = PARITY_TOLERANCE,
) -> ModelVersion:
    """Store, convert and register a model artifact as the next version of ``name``.

    Keras and SavedModel artifacts are converted to LiteRT; the conversion must agree with
    TensorFlow within ``tolerance`` on the probabilities of random inputs in the range that
    ``preprocessing`` scales pixels to. Raises
    ModelRegistrationError when the artifact cannot be used (nothing is registered then).
    """
    registration = ClassifierRegistration(
        artifact_path=artifact_path,
        labels=labels,
        input_size=input_size,
        tag_labels=tag_labels,
        preprocessing=preprocessing,
    )
    return version_register(
        registration=registration, name=name, stage=stage, source=source, tolerance=tolerance
    )
