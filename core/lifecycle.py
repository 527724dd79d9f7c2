"""Work each app wants done when a web worker starts or exits, registered in
``AppConfig.ready()``.

The servers know no app: core.worker runs the start hooks as each worker starts (granian:
the ASGI lifespan's startup; gunicorn: ``post_worker_init``) and the exit hooks as it stops,
in registration order (exit hooks in reverse order, so what started last stops first).
Imports nothing from Django: a server's master process loads this module before it forks.
"""

import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

WorkerStartHook = Callable[[], None]
WorkerExitHook = Callable[[], None]

_hooks: list[WorkerStartHook] = []
_exit_hooks: list[WorkerExitHook] = []
_hooks_lock = threading.Lock()


def worker_start_hook_register(hook: WorkerStartHook) -> None:
    """Call ``hook`` in every worker as it starts (registering the same hook twice is ignored)."""
    with _hooks_lock:
        if hook not in _hooks:
            _hooks.append(hook)


def worker_start_hooks() -> list[WorkerStartHook]:
    with _hooks_lock:
        return list(_hooks)


def worker_exit_hook_register(hook: WorkerExitHook) -> None:
    """Call ``hook`` in every worker as it exits (a restart, a graceful stop, max_requests).

    A hook must bound its own time: the server kills a worker still busy after its graceful
    timeout. Registering the same hook twice is ignored.
    """
    with _hooks_lock:
        if hook not in _exit_hooks:
            _exit_hooks.append(hook)


def worker_exit_hooks() -> list[WorkerExitHook]:
    """The exit hooks, the last registered first."""
    with _hooks_lock:
        return list(reversed(_exit_hooks))


# Seconds a stopping server (SIGTERM) gives the requests it has before its workers are killed:
# WEB_GRACEFUL_TIMEOUT's default, for granian and gunicorn alike. Whatever stops the server
# must wait longer (compose's stop_grace_period, 'docker run --stop-timeout', Kubernetes'
# terminationGracePeriodSeconds minus the preStop sleep).
GRACEFUL_TIMEOUT_DEFAULT = 20


def metrics_folder_prepare() -> tuple[Path, bool]:
    """The workers' shared prometheus-client folder, emptied, and whether it was created here.

    prometheus-client's multiprocess mode needs a folder that every worker writes its figures
    to, named by PROMETHEUS_MULTIPROC_DIR before any worker starts: the server's master makes
    one (or empties the one given: a previous run's figures would add to this run's).
    """
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not given:
        path = Path(tempfile.mkdtemp(prefix="classifier-metrics-"))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
        return path, True
    path = Path(given)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    return path, False
