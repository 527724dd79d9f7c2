"""A web worker's start and stop, whichever server runs it (granian through core.front's
lifespan, or gunicorn through its hooks).

Loads Django: import it in a worker, never in a server's master process before it forks.
"""

import ctypes
import ctypes.util
import gc
import logging
import os
from pathlib import Path

from django.db import connections
from django.urls import get_resolver
from prometheus_client import multiprocess

from core.errors import ServiceError
from core.lifecycle import worker_exit_hooks, worker_start_hooks

logger = logging.getLogger(__name__)


def malloc_tune() -> None:
    """Have glibc give large freed blocks back to the system in this worker.

    Kept for what it measured: a worker's memory after large decodes (docs/reliability.md,
    "Memory"), and page faults and CPU per upload (docs/performance.md, "What was tried").

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
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_mmap_threshold = -3  # from glibc's malloc.h
        if not libc.mallopt(m_mmap_threshold, threshold):
            logger.warning("mallopt(M_MMAP_THRESHOLD) refused; memory may stay high")
        trim = int(os.environ.get("MALLOC_TRIM_THRESHOLD", str(4 * 1024 * 1024)))
        m_trim_threshold = -1
        if trim > 0 and not libc.mallopt(m_trim_threshold, trim):
            logger.warning("mallopt(M_TRIM_THRESHOLD) refused; uploads may cost more CPU")
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        pass


def worker_ready() -> None:
    """Ready this worker before it takes traffic, so that its first request is not its slowest.

    Imports every view (the URLconf), then runs the apps' worker-start hooks (loading and
    warming the production model, starting the Elasticsearch sender). A hook that fails is
    logged and the worker starts anyway: without a model yet, it loads one when promoted.
    """
    metrics_sweep_dead()
    try:
        get_resolver().url_patterns  # noqa: B018 (imports the views now)
        for hook in worker_start_hooks():
            try:
                hook()
            except ServiceError as exc:  # no model in production yet, say
                logger.warning("Not ready at start: %s", exc)
            except Exception:  # a database not migrated yet, say: never stop the worker for it
                logger.exception("A worker start hook failed: %s", hook.__qualname__)
    finally:
        connections.close_all()  # request threads open their own
    # What the worker loaded to start (Django, the models, their libraries: about 120,000
    # objects) lives as long as it does. Frozen out of the cyclic collector's view, a full
    # collection walks only what requests made since, instead of taking 20-30 ms with the GIL
    # held while every request thread waits.
    gc.freeze()


def worker_done() -> None:
    """Run the apps' worker-exit hooks (the request log writes out its queue)."""
    for hook in worker_exit_hooks():
        try:
            hook()
        except Exception:  # one hook's failure must not keep the others from running
            logger.exception("A worker exit hook failed: %s", hook.__qualname__)


# --- prometheus-client's multiprocess folder ----------------------------------------------------


def metrics_mark_dead(pid: int) -> None:
    """Drop a stopped worker's live gauges; its counters keep adding up."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        return
    multiprocess.mark_process_dead(pid, path=folder)


def metrics_sweep_dead() -> None:
    """Mark dead every worker whose files are in the folder but whose process is gone.

    A worker that stops gracefully marks itself; one killed (out of memory, SIGKILL) cannot,
    and its replacement does it here, so its gauges do not count forever.
    """
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        return
    pids = set()
    for path in Path(folder).glob("gauge_live*_*.db"):
        with_pid = path.stem.rsplit("_", 1)[-1]
        if with_pid.isdigit():
            pids.add(int(with_pid))
    for pid in pids - {os.getpid()}:
        if not _running(pid):
            metrics_mark_dead(pid)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # running, as another user
        return True
    return True
