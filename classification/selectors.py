"""Reads of the model registry."""

from django.conf import settings
from django.db.models import QuerySet

from classification.models import ModelVersion


def model_version_production(*, name: str) -> ModelVersion | None:
    return ModelVersion.objects.filter(name=name, stage=ModelVersion.Stage.PRODUCTION).first()


def model_name_exists(*, name: str) -> bool:
    return ModelVersion.objects.filter(name=name).exists()


def model_default_name() -> str | None:
    """DEFAULT_MODEL while it has a production version, else the most recently promoted
    production model's name; None when nothing is in production (one query)."""
    production = ModelVersion.objects.filter(stage=ModelVersion.Stage.PRODUCTION)
    names = list(production.order_by("-promoted_at", "-pk").values_list("name", flat=True))
    if settings.DEFAULT_MODEL in names:
        return settings.DEFAULT_MODEL
    return names[0] if names else None


def model_production_versions() -> list[ModelVersion]:
    """The production version of every name, the default model's first, then by name."""
    versions = list(ModelVersion.objects.filter(stage=ModelVersion.Stage.PRODUCTION))
    default = model_default_name()
    return sorted(versions, key=lambda version: (version.name != default, version.name))


def model_version_list() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.order_by("name", "-version")


def model_catalogue() -> list[dict]:
    """Each registered name with its production version number and all its versions."""
    catalogue: dict[str, dict] = {}
    for model_version in model_version_list():
        entry = catalogue.setdefault(
            model_version.name,
            {"name": model_version.name, "production_version": None, "versions": []},
        )
        if model_version.stage == ModelVersion.Stage.PRODUCTION:
            entry["production_version"] = model_version.version
        entry["versions"].append(model_version)
    return list(catalogue.values())


def model_version_get(*, name: str, version: int) -> ModelVersion | None:
    return ModelVersion.objects.filter(name=name, version=version).first()
