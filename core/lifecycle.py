"""Work each app wants done when a gunicorn worker starts or exits, registered in
``AppConfig.ready()``.

The gunicorn configuration knows no app: it runs the start hooks in each worker's
``post_worker_init`` and the exit hooks in its ``worker_exit``, in registration order (exit
hooks in reverse order, so what started last stops first).
"""

import threading
from collections.abc import Callable

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

    A hook must bound its own time: gunicorn kills a worker still busy after its graceful
    timeout. Registering the same hook twice is ignored.
    """
    with _hooks_lock:
        if hook not in _exit_hooks:
            _exit_hooks.append(hook)


def worker_exit_hooks() -> list[WorkerExitHook]:
    """The exit hooks, the last registered first."""
    with _hooks_lock:
        return list(reversed(_exit_hooks))
