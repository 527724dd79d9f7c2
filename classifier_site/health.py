"""Readiness of this worker: what GET /health/ready checks, each check cheap and bounded.

Required: the default production model is loaded and answers a warm-up inference, and the
database answers. Reported only: Redis (the service degrades to computing without it) and
Elasticsearch (the outbox waits for it).
"""

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection

from classifier_site.errors import ServiceError


@dataclass(frozen=True)
class Check:
    ok: bool | None  # None: not configured
    required: bool
    detail: str


def _model_check() -> Check:
    from classification.serving.engine import get_runtime

    try:
        # Loads the model on a worker's first probe, so a worker becomes ready by itself.
        model = get_runtime().serving_model()
        started = time.perf_counter()
        size = model.input_size
        # The interpreter itself, so that probes stay out of the inference metrics.
        outputs = model.classifier.invoke(np.zeros((1, size, size, 3), dtype=np.float32))
        elapsed_ms = (time.perf_counter() - started) * 1000
    except ServiceError as exc:
        return Check(ok=False, required=True, detail=exc.message)
    except Exception as exc:
        return Check(ok=False, required=True, detail=f"{type(exc).__name__}: {exc}")
    if not np.all(np.isfinite(outputs)):
        return Check(ok=False, required=True, detail=f"{model.name} v{model.version}: NaN out")
    return Check(
        ok=True,
        required=True,
        detail=f"{model.name} v{model.version} answered a warm-up inference in {elapsed_ms:.1f} ms",
    )


def _database_check() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        return Check(ok=False, required=True, detail=f"{type(exc).__name__}: {exc}")
    return Check(ok=True, required=True, detail=connection.vendor)


def _redis_check() -> Check:
    from classification.caching import get_result_cache

    cache = get_result_cache()
    if not cache.shared:
        return Check(ok=None, required=False, detail="not configured (local-memory cache)")
    if cache.ping():
        return Check(ok=True, required=False, detail="answers")
    return Check(ok=False, required=False, detail="unreachable; answers are computed uncached")


def _elasticsearch_check() -> Check:
    from reporting.elastic import elasticsearch_client

    client = elasticsearch_client()
    if client is None:
        return Check(ok=None, required=False, detail="not configured (no export)")
    try:
        up = client.options(request_timeout=settings.HEALTH_CHECK_TIMEOUT).ping()
    except Exception:
        up = False
    if up:
        return Check(ok=True, required=False, detail="answers")
    return Check(ok=False, required=False, detail="unreachable; the export outbox waits")


def readiness() -> dict[str, Any]:
    """Every check's outcome and whether all the required ones passed."""
    checks = {
        "model": _model_check(),
        "database": _database_check(),
        "redis": _redis_check(),
        "elasticsearch": _elasticsearch_check(),
    }
    ready = all(check.ok for check in checks.values() if check.required)
    return {
        "status": "ready" if ready else "not_ready",
        "checks": {name: asdict(check) for name, check in checks.items()},
    }
