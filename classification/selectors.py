"""Reads: the model registry, and the result cache's statistics."""

from collections import Counter
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import QuerySet

from classification.cache_statistics import get_cache_statistics
from classification.caching import KINDS, get_result_cache
from classification.models import ModelVersion


def model_version_production(*, name: str) -> ModelVersion | None:
    return ModelVersion.objects.filter(name=name, stage=ModelVersion.Stage.PRODUCTION).first()


def model_version_newest(*, name: str) -> ModelVersion | None:
    """The highest version of ``name``, whatever its stage."""
    return ModelVersion.objects.filter(name=name).order_by("-version").first()


def model_name_exists(*, name: str) -> bool:
    return ModelVersion.objects.filter(name=name).exists()


def model_default_name() -> str | None:
    """DEFAULT_MODEL while it has a production version, else the most recently promoted
    production model's name; None when nothing is in production (one query).

    Where a production int8 version was made from DEFAULT_MODEL's production version and its
    fidelity report passes the default rule (``registry.fidelity.default_rule``), that int8
    version's name answers instead (unless DEFAULT_MODEL_INT8 is off): requests may still name
    either.
    """
    production = ModelVersion.objects.filter(stage=ModelVersion.Stage.PRODUCTION)
    rows = list(
        production.order_by("-promoted_at", "-pk").values_list(
            "name", "version", "metrics__quantized_from", "metrics__fidelity__default_rule"
        )
    )
    versions = {name: version for name, version, _, _ in rows}
    if settings.DEFAULT_MODEL in versions:
        source = {"name": settings.DEFAULT_MODEL, "version": versions[settings.DEFAULT_MODEL]}
        for name, _, quantized_from, rule in rows if settings.DEFAULT_MODEL_INT8 else ():
            if quantized_from == source and isinstance(rule, dict) and rule.get("passes") is True:
                return name
        return settings.DEFAULT_MODEL
    return rows[0][0] if rows else None


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


def result_cache_stats() -> dict[str, Any]:
    """/cache-stats: hits, misses and hit rates (overall and per key kind), entries, TTLs, the
    backend and whether it answers; while it does not, the counters read zero and the entries
    and the counters' start None."""
    cache, statistics = get_result_cache(), get_cache_statistics()
    status = "up" if cache.ping() else "down"
    counts: Counter[str] = Counter()
    started_at: datetime | None = None
    entries: dict[str, int | None] = {}
    if status == "up":
        try:
            counts, started_at = statistics.counts()
            entries = {kind: cache.entries(kind) for kind in KINDS}
        except Exception as exc:
            cache.fault(exc)
            status = "down"

    def rates(hits: int, misses: int) -> dict[str, Any]:
        total = hits + misses
        return {"hits": hits, "misses": misses, "hit_rate": hits / total if total else 0.0}

    by_kind = {
        kind: {
            **rates(counts[f"{kind}:hits"], counts[f"{kind}:misses"]),
            "entries": entries.get(kind),
            "ttl_seconds": cache.ttl(kind),
        }
        for kind in KINDS
    }
    return {
        "backend": "redis" if cache.shared else "local-memory",
        "status": status,
        "counters_scope": "all workers" if statistics.shared else "this worker process only",
        **rates(
            sum(counts[f"{kind}:hits"] for kind in KINDS),
            sum(counts[f"{kind}:misses"] for kind in KINDS),
        ),
        "by_kind": by_kind,
        "counters_started_at": started_at,
    }
