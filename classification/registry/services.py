"""Writes to the model registry: registering, promoting and archiving model versions."""

import logging
import tarfile
import tempfile
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone
from PIL import Image

from classification.exceptions import ModelRegistrationError
from classification.models import ModelVersion
from classification.registry.conversion import artifact_format, model_convert, parity_check
from classification.registry.store import StoredArtifact, artifact_put_bytes, artifact_put_file
from classification.serving.imaging import DEFAULT_PREPROCESSING, image_preprocess

logger = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-4


def _source_put(*, path: Path, source_format: str) -> StoredArtifact:
    if source_format != ModelVersion.Format.SAVED_MODEL:
        return artifact_put_file(path=path, suffix=path.suffix.lower())
    with tempfile.NamedTemporaryFile(suffix=".tar") as archive:
        with tarfile.open(archive.name, "w") as tar:
            tar.add(path, arcname="saved_model")
        return artifact_put_file(path=Path(archive.name), suffix=".saved_model.tar")


def _preprocessing_check(preprocessing: dict) -> None:
    """Refuse options serving cannot apply: every request to the version would fail."""
    try:
        image_preprocess(image=Image.new("RGB", (2, 2)), input_size=1, preprocessing=preprocessing)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelRegistrationError(
            f"The preprocessing {preprocessing} cannot be applied: {exc}"
        ) from exc


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
    artifact_path = Path(artifact_path)
    if not artifact_path.exists():
        raise ModelRegistrationError(f"{artifact_path} does not exist.")
    preprocessing = {**DEFAULT_PREPROCESSING, **(preprocessing or {})}
    _preprocessing_check(preprocessing)
    source_format = artifact_format(artifact_path)
    converted = model_convert(
        path=artifact_path, source_format=source_format, input_size=input_size
    )
    if input_size is not None and input_size != converted.input_size:
        raise ModelRegistrationError(
            f"The model takes {converted.input_size}x{converted.input_size} images, "
            f"not {input_size}."
        )
    if converted.num_outputs != len(labels):
        raise ModelRegistrationError(
            f"The model has {converted.num_outputs} outputs but {len(labels)} labels were given."
        )
    # Random inputs over the range this version's preprocessing produces, timed on the
    # threads serving uses.
    low, high = (float(bound) for bound in preprocessing["scale"])
    report = parity_check(
        converted=converted, input_range=(low, high), num_threads=settings.LITERT_NUM_THREADS
    )
    if report.max_abs_diff is not None and report.max_abs_diff >= tolerance:
        raise ModelRegistrationError(
            f"LiteRT and TensorFlow disagree by {report.max_abs_diff:.2e} on the probabilities "
            f"(the limit is {tolerance:.0e}); the model was not registered."
        )

    stored_source = _source_put(path=artifact_path, source_format=source_format)
    stored_tflite = artifact_put_bytes(data=converted.tflite, suffix=".tflite")
    metrics = {
        "parity_max_abs_diff": report.max_abs_diff,
        "litert_invoke_ms_median": round(report.invoke_ms_median, 3),
        "litert_num_threads": settings.LITERT_NUM_THREADS,
        "outputs": "logits" if report.outputs_logits else "probabilities",
    }
    model_version = model_version_create(
        name=name,
        source_format=source_format,
        source_artifact=stored_source.name,
        source_sha256=stored_source.sha256,
        artifact=stored_tflite.name,
        artifact_sha256=stored_tflite.sha256,
        artifact_size=stored_tflite.size,
        labels=list(labels),
        tag_labels=tag_labels,
        input_size=converted.input_size,
        preprocessing=preprocessing,
        metrics=metrics,
        source=source,
    )
    logger.info("Registered %s (parity %s)", model_version, report.max_abs_diff)
    if stage == ModelVersion.Stage.PRODUCTION:
        model_version = model_version_promote(model_version=model_version)
    elif stage == ModelVersion.Stage.ARCHIVED:
        model_version = model_version_archive(model_version=model_version)
    return model_version


def model_version_create(*, name: str, **fields: object) -> ModelVersion:
    """Create the next version of ``name`` from artifact fields that are already stored."""
    # Two registrations of one name at once: the unique constraint picks a winner, retry the other.
    for _attempt in range(5):
        try:
            with transaction.atomic():
                latest = ModelVersion.objects.filter(name=name).aggregate(v=Max("version"))["v"]
                model_version = ModelVersion(name=name, version=(latest or 0) + 1, **fields)
                model_version.full_clean()
                model_version.save()
                return model_version
        except IntegrityError:
            continue
    raise ModelRegistrationError(f"Could not allocate a version number for {name!r}.")


@transaction.atomic
def model_version_promote(*, model_version: ModelVersion) -> ModelVersion:
    """Make ``model_version`` the production version of its name; the previous one is archived.

    Running workers pick the change up within MODEL_REFRESH_SECONDS.
    """
    # Lock the name's rows so that two promotions cannot both leave a production version.
    versions = ModelVersion.objects.select_for_update().filter(name=model_version.name)
    list(versions)
    versions.filter(stage=ModelVersion.Stage.PRODUCTION).exclude(pk=model_version.pk).update(
        stage=ModelVersion.Stage.ARCHIVED
    )
    model_version.stage = ModelVersion.Stage.PRODUCTION
    model_version.promoted_at = timezone.now()
    model_version.save(update_fields=["stage", "promoted_at"])
    logger.info("Promoted %s", model_version)
    return model_version


def model_version_archive(*, model_version: ModelVersion) -> ModelVersion:
    model_version.stage = ModelVersion.Stage.ARCHIVED
    model_version.save(update_fields=["stage"])
    logger.info("Archived %s", model_version)
    return model_version


def model_version_reference_profile_set(
    *, model_version: ModelVersion, profile: dict | None, keep_existing: bool = False
) -> bool:
    """Store (or, with None, clear) the model-monitoring reference profile of ``model_version``.

    With ``keep_existing``, a profile stored meanwhile (by another worker) is kept. Returns
    whether ``profile`` was stored; ``model_version`` is updated in memory when it was.
    """
    versions = ModelVersion.objects.filter(pk=model_version.pk)
    if keep_existing:
        versions = versions.filter(reference_profile__isnull=True)
    stored = bool(versions.update(reference_profile=profile))
    if stored:
        model_version.reference_profile = profile
    return stored
