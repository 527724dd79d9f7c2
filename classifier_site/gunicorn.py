"""gunicorn settings for 'make run': threaded workers, each loading the model once, lazily.

Metrics: prometheus-client's multiprocess mode needs a folder shared by the workers, named by
PROMETHEUS_MULTIPROC_DIR before any worker starts. This file (run by the master) creates one
(or empties the one given), and each worker that exits is marked dead so that its live gauges
drop out while its counters keep adding up.
"""

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

# The hook registries import nothing from Django, so the master may load them before it forks.
from core.lifecycle import worker_exit_hooks, worker_start_hooks

if TYPE_CHECKING:  # gunicorn ships no type information: these document the hooks' arguments
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.base import Worker

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = 20
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


def post_fork(server: "Arbiter", worker: "Worker") -> None:
    """Have glibc give large freed blocks back to the system in each worker.

    Kept for what it measured: a worker's memory after large decodes (README.md, "Memory"), and
    page faults and CPU per upload (docs/performance.md, "What was tried").

    glibc raises its mmap threshold after the first large free, so later decoded images (tens
    of MB each) come from per-thread heap arenas that keep the memory once freed: four threads
    that each decoded one 36-megapixel image once keep ~150 MB apiece, whatever the decode
    budget allows at a time. A fixed threshold (MALLOC_MMAP_THRESHOLD bytes, 0: glibc's
    default behaviour) maps every block above it on its own and unmaps it when freed.

    The threshold, 4 MiB, lets an ordinary photo's decode (640 x 480 is 1.2 MB in Pillow) come
    from the heap and be reused: at 1 MiB each one was mapped anew and faulted in page by
    page. Fixing it also fixes glibc's trim threshold at 128 kB, so that every request gave the
    top of its heap back and faulted it in again; MALLOC_TRIM_THRESHOLD (4 MiB) lets an arena
    keep that much free at its top.
    """
    threshold = int(os.environ.get("MALLOC_MMAP_THRESHOLD", str(4 * 1024 * 1024)))
    if threshold <= 0:
        return
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_mmap_threshold = -3  # from glibc's malloc.h
        if not libc.mallopt(m_mmap_threshold, threshold):
            worker.log.warning("mallopt(M_MMAP_THRESHOLD) refused; memory may stay high")
        trim = int(os.environ.get("MALLOC_TRIM_THRESHOLD", str(4 * 1024 * 1024)))
        m_trim_threshold = -1
        if trim > 0 and not libc.mallopt(m_trim_threshold, trim):
            worker.log.warning("mallopt(M_TRIM_THRESHOLD) refused; uploads may cost more CPU")
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        pass


def post_worker_init(worker: "Worker") -> None:
    """Ready each worker as it starts, so that its first request is not its slowest.

    Imports every view (the URLconf), then runs the apps' worker-start hooks (loading and
    warming the production model, starting the Elasticsearch sender). A hook that fails is
    logged and the worker starts anyway: without a model yet, it loads one when promoted.
    """
    # Imported here: Django (core.errors imports it too) must not load in the master before fork.
    from django.db import connections
    from django.urls import get_resolver

    from core.errors import ServiceError

    try:
        get_resolver().url_patterns  # noqa: B018 (imports the views now)
        for hook in worker_start_hooks():
            try:
                hook()
            except ServiceError as exc:  # no model in production yet, say
                worker.log.warning("Not ready at start: %s", exc)
            except Exception:  # a database not migrated yet, say: never stop the worker for it
                worker.log.exception("A worker start hook failed: %s", hook.__qualname__)
    finally:
        connections.close_all()  # request threads open their own


def worker_exit(server: "Arbiter", worker: "Worker") -> None:
    """Run the apps' worker-exit hooks (the request log writes out its queue)."""
    for hook in worker_exit_hooks():
        try:
            hook()
        except Exception:  # one hook's failure must not keep the others from running
            worker.log.exception("A worker exit hook failed: %s", hook.__qualname__)


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


def _metrics_dir() -> tuple[Path, bool]:
    """The multiprocess metrics folder, emptied, and whether this master created it."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not given:
        path = Path(tempfile.mkdtemp(prefix="classifier-metrics-"))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
        return path, True
    path = Path(given)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):  # a previous run's figures would add to this run's
        stale.unlink()
    return path, False


_METRICS_DIR, _METRICS_DIR_CREATED = _metrics_dir()


def child_exit(server: "Arbiter", worker: "Worker") -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, path=str(_METRICS_DIR))


def on_exit(server: "Arbiter") -> None:
    if _METRICS_DIR_CREATED:
        shutil.rmtree(_METRICS_DIR, ignore_errors=True)
