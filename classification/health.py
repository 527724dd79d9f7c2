"""The classification app's readiness checks: the default model answers (required); Redis and
the fetch slots (reported)."""

import time

import numpy as np
from django.conf import settings

from classification.caching import get_result_cache
from classification.intake.fetch_slots import fetch_slots
from classification.serving.engine import get_runtime
from core.errors import ServiceError
from core.health import Check


def model_check() -> Check:
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


def redis_check() -> Check:
    cache = get_result_cache()
    if not cache.shared:
        return Check(ok=None, required=False, detail="not configured (local-memory cache)")
    if cache.ping():
        return Check(ok=True, required=False, detail="answers")
    return Check(ok=False, required=False, detail="unreachable; answers are computed uncached")


def fetch_capacity_check() -> Check:
    """Whether this worker has a free fetch slot: reported, not required (core.health says why);
    a new URL request without one is answered busy with Retry-After at once."""
    in_use, limit = fetch_slots.in_use(), settings.IMAGE_FETCH_CONCURRENCY
    return Check(
        ok=in_use < limit, required=False, detail=f"{in_use} of {limit} fetch slots in use"
    )
