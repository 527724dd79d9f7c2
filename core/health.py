"""Readiness of this worker: what GET /health/ready checks, each check cheap and bounded.

The site checks the database itself; each app registers its own checks in its
``AppConfig.ready()`` with ``health_check_register`` (classification: the model, Redis and the
fetch slots; reporting: Elasticsearch). A required check that fails makes the worker not ready;
the others are reported only, in the body and in ``classifier_readiness_check_ok``.

Required means "this worker cannot serve": its own state (the model loaded and answering).
What every worker shares, the database, Redis, Elasticsearch, is reported, never required: a
database blip would otherwise take every pod out of the Service at once, and the service
answers without it (rows wait in the request-log queue and its spill file). So are the fetch
slots: a burst of URL requests fills them on every pod alike, and a worker without a free slot
still serves uploads, hits and probes (new fetches are answered ``busy`` at once).
"""

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from django.db import connection
from prometheus_client import Gauge

from core.metrics import REGISTRY, labelled

# Per reported (not required) check of the last readiness probe: 1 passed, 0 failed; not
# configured: no series. The lowest over live workers: one that cannot reach the database shows 0.
REPORTED_CHECK_OK = Gauge(
    "classifier_readiness_check_ok",
    "Whether a reported readiness check (database, redis, elasticsearch, fetch_capacity) passed "
    "on the worker's last probe (1) or not (0).",
    ["check"],
    multiprocess_mode="livemin",
    registry=REGISTRY,
)


@dataclass(frozen=True)
class Check:
    ok: bool | None  # None: not configured
    required: bool
    detail: str


HealthCheck = Callable[[], Check]

_checks: dict[str, HealthCheck] = {}
_checks_lock = threading.Lock()


def health_check_register(name: str, check: HealthCheck) -> None:
    """Run ``check`` on every readiness probe, reported under ``name`` (re-registering replaces)."""
    with _checks_lock:
        _checks[name] = check


def _database_check() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        return Check(ok=False, required=False, detail=f"{type(exc).__name__}: {exc}")
    return Check(ok=True, required=False, detail=connection.vendor)


health_check_register("database", _database_check)


def readiness() -> dict[str, Any]:
    """Every check's outcome and whether all the required ones passed."""
    with _checks_lock:
        registered = dict(_checks)
    checks = {name: _run(check) for name, check in registered.items()}
    ready = all(check.ok for check in checks.values() if check.required)
    for name, check in checks.items():
        if not check.required and check.ok is not None:
            labelled(REPORTED_CHECK_OK, name).set(1 if check.ok else 0)
    return {
        "status": "ready" if ready else "not_ready",
        "checks": {name: asdict(check) for name, check in checks.items()},
    }


def _run(check: HealthCheck) -> Check:
    try:
        return check()
    except Exception as exc:  # a broken check says so instead of failing the probe
        return Check(ok=False, required=True, detail=f"{type(exc).__name__}: {exc}")
