"""Building the reference profiles of model versions (writes, through the registry)."""

import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone

from classification.exceptions import (
    EmptyImage,
    TooManyPixels,
    UndecodableImage,
    UnsupportedImageType,
)
from classification.models import ModelVersion
from classification.registry.services import model_version_reference_profile_set
from classification.serving.engine import serving_model_load
from classification.serving.services import serving_model_classify
from reporting.monitoring import drift
from reporting.monitoring.selectors import ModelDrift, model_drift_current, model_version_answers

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp"}
# What a reference image can fail with: it is skipped, and the command says so.
_IMAGE_ERRORS = (EmptyImage, TooManyPixels, UndecodableImage, UnsupportedImageType, OSError)


class ReferenceProfileError(Exception):
    """A reference profile cannot be built from what was given."""


def reference_profile_from_images(
    *, model_version: ModelVersion, images_dir: Path, now: datetime | None = None
) -> tuple[dict, list[str]]:
    """Classify every image under ``images_dir`` with ``model_version`` (any stage) and store
    the profile of its answers on the version.

    Returns the profile and the files that were skipped (not an accepted image). Raises
    ReferenceProfileError when the folder holds no image the model could classify, and
    ModelRegistrationError when the version's artifact cannot be loaded.
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise ReferenceProfileError(f"{images_dir} is not a folder.")
    model = serving_model_load(model_version)
    observations: list[drift.Observation] = []
    skipped: list[str] = []
    for path in sorted(p for p in images_dir.rglob("*") if p.is_file()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append(str(path))
            continue
        try:
            result = serving_model_classify(model=model, image_bytes=path.read_bytes(), top_k=1)
        except _IMAGE_ERRORS:
            skipped.append(str(path))
            continue
        observations.append(_observation(result.classification, result.confidence, result))
    if not observations:
        raise ReferenceProfileError(f"No image under {images_dir} could be classified.")
    profile = drift.profile_build(
        observations,
        source="images",
        description=f"{len(observations)} reference images in {images_dir}",
        built_at=now or timezone.now(),
    )
    model_version_reference_profile_set(model_version=model_version, profile=profile)
    logger.info(
        "Reference profile of %s from %s (%d answers)",
        model_version,
        profile["description"],
        profile["count"],
    )
    return profile, skipped


def _observation(label: str, confidence: float, result: Any) -> drift.Observation:
    stats = result.input_stats
    return drift.Observation(
        label=label,
        confidence=confidence,
        width=stats.get("width"),
        height=stats.get("height"),
        brightness=stats.get("brightness"),
        tags=None if result.tags is None else {tag.label: tag.present for tag in result.tags},
    )


def reference_profile_from_requests(
    *, model_version: ModelVersion, requests: int | None = None, now: datetime | None = None
) -> dict | None:
    """Store the profile of the first ``requests`` (MONITORING_REFERENCE_REQUESTS) answers
    ``model_version`` gave after its promotion, once that many exist; one query until then.

    Returns the profile, or None when there are not enough answers yet (nothing is stored).
    A profile stored meanwhile by another worker is kept.
    """
    wanted = requests or settings.MONITORING_REFERENCE_REQUESTS
    rows = model_version_answers(model_version.name, model_version.version)
    if model_version.promoted_at is not None:
        rows = rows.filter(created_at__gte=model_version.promoted_at)
    first = list(
        rows.order_by("created_at", "id").values_list(
            "top_label", "confidence", "image_width", "image_height", "image_brightness", "tags"
        )[:wanted]
    )
    if len(first) < wanted:
        return None
    profile = drift.profile_build(
        [
            drift.Observation(
                label, confidence or 0.0, width, height, brightness, _logged_tags(tags)
            )
            for label, confidence, width, height, brightness, tags in first
        ],
        source="requests",
        description=f"the first {wanted} answers in production",
        built_at=now or timezone.now(),
    )
    if model_version_reference_profile_set(
        model_version=model_version, profile=profile, keep_existing=True
    ):
        logger.info("Reference profile of %s from its first %d answers", model_version, wanted)
    return profile


def _logged_tags(tags: list[dict] | None) -> dict[str, bool] | None:
    """A log row's tags (``[{"label", "probability", "present"}, ...]``) as label -> present."""
    if tags is None:
        return None
    return {tag["label"]: bool(tag["present"]) for tag in tags}


def reference_profiles_ensure(*, model_versions: Sequence[ModelVersion]) -> None:
    """Build the missing reference profiles of production versions that have enough answers.

    Costs one query per production version still without a profile, none otherwise.
    """
    for model_version in model_versions:
        if (
            model_version.reference_profile is None
            and model_version.stage == ModelVersion.Stage.PRODUCTION
        ):
            reference_profile_from_requests(model_version=model_version)


def model_monitoring_refresh(*, now: datetime | None = None) -> list[ModelDrift]:
    """Build the reference profiles that are due, then compare (model_drift_current)."""
    versions = list(
        ModelVersion.objects.filter(
            stage=ModelVersion.Stage.PRODUCTION, reference_profile__isnull=True
        )
    )
    reference_profiles_ensure(model_versions=versions)
    return model_drift_current(now=now)
