"""The version rows of the registry: create the next version of a name, promote, archive.

Below the registration pipeline and the manifest, which both create versions here; the rest
of the project calls these through ``classification.registry.services``.
"""

import logging

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from classification.exceptions import ModelRegistrationError
from classification.models import ModelVersion

logger = logging.getLogger(__name__)


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


def model_version_stage_put(*, model_version: ModelVersion, stage: str) -> ModelVersion:
    """Put a new (staging) version in ``stage``: promoted for production, archived."""
    if stage == ModelVersion.Stage.PRODUCTION:
        return model_version_promote(model_version=model_version)
    if stage == ModelVersion.Stage.ARCHIVED:
        return model_version_archive(model_version=model_version)
    return model_version
