"""gunicorn settings for ``WEB_SERVER=gunicorn`` (classifier_site.serve): threaded workers,
each loading the model once, lazily. The server before granian, kept for the side-by-side load
test; a client sending its request slowly holds one of its threads (docs/reliability.md).

Metrics: this file (run by the master) prepares the workers' shared prometheus-client folder
(core.lifecycle), and each worker that exits is marked dead so that its live gauges drop out
while its counters keep adding up.
"""

import os
import shutil
from typing import TYPE_CHECKING

# The hook registries import nothing from Django, so the master may load them before it forks.
from core.lifecycle import GRACEFUL_TIMEOUT_DEFAULT, metrics_folder_prepare

if TYPE_CHECKING:  # gunicorn ships no type information: these document the hooks' arguments
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.base import Worker

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS") or os.environ.get("WEB_THREADS") or "64")
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = int(os.environ.get("WEB_GRACEFUL_TIMEOUT") or GRACEFUL_TIMEOUT_DEFAULT)
# Off by default: the service writes its own access line per request (core.access),
# with the request id, route, cache kind and model that gunicorn's line cannot know. Set
# GUNICORN_ACCESS_LOG=- to have gunicorn's as well.
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
# Each worker loads its model right after it starts (post_worker_init), never at import.
preload_app = False
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))
# Web connections give up on a lock or a statement instead of holding a request thread for as
# long as a migration, a VACUUM FULL or a long report query holds the table. Set here (the
# master, before any worker imports the settings), so management commands keep no limit.
os.environ.setdefault("DATABASE_STATEMENT_TIMEOUT", "10")
os.environ.setdefault("DATABASE_LOCK_TIMEOUT", "2")


def when_ready(server: "Arbiter") -> None:
    """Say at start which result cache the workers share (or do not share)."""
    from urllib.parse import urlsplit

    redis_url = os.environ.get("REDIS_URL", "")
    if redis_url:
        parts = urlsplit(redis_url)
        where = f"{parts.hostname}:{parts.port or 6379}{parts.path}"  # never the password
        server.log.info("Result cache and throttles: Redis at %s, shared by all workers", where)
    else:
        server.log.info("Result cache and throttles: local memory, one per worker (no REDIS_URL)")


def _worker():
    from core import worker

    return worker


def post_fork(server: "Arbiter", worker: "Worker") -> None:
    """Have glibc give large freed blocks back to the system (core.worker.malloc_tune)."""
    _worker().malloc_tune()


def post_worker_init(worker: "Worker") -> None:
    """Ready each worker as it starts (the URLconf, the apps' start hooks: core.worker)."""
    _worker().worker_ready()


def worker_exit(server: "Arbiter", worker: "Worker") -> None:
    """Run the apps' worker-exit hooks (the request log writes out its queue)."""
    _worker().worker_done()


# With LOG_FORMAT=json (the default when PRODUCTION=1) gunicorn's own lines are JSON too.
_production = os.environ.get("PRODUCTION", "").strip().lower() in {"1", "true", "yes", "on"}
if os.environ.get("LOG_FORMAT", "json" if _production else "plain").strip().lower() == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "core.logs.JsonLineFormatter"}},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "json"},
            "error_console": {"class": "logging.StreamHandler", "formatter": "json"},
        },
        "root": {"level": "INFO", "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
            # A logging config turns gunicorn's access lines on; keep them as 'accesslog' says.
            "gunicorn.access": {
                "level": "INFO" if accesslog else "WARNING",
                "handlers": ["console"],
                "propagate": False,
            },
        },
    }


_METRICS_DIR, _METRICS_DIR_CREATED = metrics_folder_prepare()


def child_exit(server: "Arbiter", worker: "Worker") -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, path=str(_METRICS_DIR))


def on_exit(server: "Arbiter") -> None:
    if _METRICS_DIR_CREATED:
        shutil.rmtree(_METRICS_DIR, ignore_errors=True)
