"""Readiness of this worker: what GET /health/ready checks, each check cheap and bounded.

The site checks the database itself; each app registers its own checks in its
``AppConfig.ready()`` with ``health_check_register`` (classification: the model and Redis;
reporting: Elasticsearch). A required check that fails makes the worker not ready; the others
are reported only.
"""

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from django.db import connection


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
        return Check(ok=False, required=True, detail=f"{type(exc).__name__}: {exc}")
    return Check(ok=True, required=True, detail=connection.vendor)


health_check_register("database", _database_check)


def readiness() -> dict[str, Any]:
    """Every check's outcome and whether all the required ones passed."""
    with _checks_lock:
        registered = dict(_checks)
    checks = {name: _run(check) for name, check in registered.items()}
    ready = all(check.ok for check in checks.values() if check.required)
    return {
        "status": "ready" if ready else "not_ready",
        "checks": {name: asdict(check) for name, check in checks.items()},
    }


def _run(check: HealthCheck) -> Check:
    try:
        return check()
    except Exception as exc:  # a broken check says so instead of failing the probe
        return Check(ok=False, required=True, detail=f"{type(exc).__name__}: {exc}")
