"""Writes to the model registry, as the rest of the project calls them.

Registering runs through the registration pipeline (``pipeline.py``), one module per kind:
``classifier.model_version_register`` (re-exported here), ``multi_task.multi_task_version_register``
and ``clip.zero_shot_register``. Versions are created, promoted and archived by ``versions.py``.
"""

from django.db import transaction

from classification.models import ModelVersion
from classification.registry.classifier import model_version_register
from classification.registry.pipeline import PARITY_TOLERANCE
from classification.registry.versions import (
    model_version_archive,
    model_version_create,
    model_version_promote,
)

__all__ = [
    "PARITY_TOLERANCE",
    "model_version_archive",
    "model_version_create",
    "model_version_evaluation_store",
    "model_version_promote",
    "model_version_reference_profile_set",
    "model_version_register",
]


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


@transaction.atomic
def model_version_evaluation_store(
    *, model_version: ModelVersion, set_name: str, figures: dict
) -> ModelVersion:
    """Record ``figures`` as ``model_version``'s evaluation on the labelled set ``set_name``.

    Kept in ``metrics["evaluations"][set_name]``, beside the other sets' and the registration's
    figures; the row is locked and re-read so that concurrent writers of metrics lose nothing.
    """
    locked = ModelVersion.objects.select_for_update().get(pk=model_version.pk)
    metrics = dict(locked.metrics or {})
    evaluations = dict(metrics.get("evaluations") or {})
    evaluations[set_name] = figures
    metrics["evaluations"] = evaluations
    locked.metrics = metrics
    locked.save(update_fields=["metrics"])
    model_version.metrics = metrics
    return model_version
