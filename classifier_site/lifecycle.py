"""Work each app wants done when a gunicorn worker starts, registered in ``AppConfig.ready()``.

The gunicorn configuration knows no app: it runs these hooks in each worker's
``post_worker_init``, in registration order, so a worker's first request is not its slowest.
"""

import threading
from collections.abc import Callable

WorkerStartHook = Callable[[], None]

_hooks: list[WorkerStartHook] = []
_hooks_lock = threading.Lock()


def worker_start_hook_register(hook: WorkerStartHook) -> None:
    """Call ``hook`` in every worker as it starts (registering the same hook twice is ignored)."""
    with _hooks_lock:
        if hook not in _hooks:
            _hooks.append(hook)


def worker_start_hooks() -> list[WorkerStartHook]:
    with _hooks_lock:
        return list(_hooks)
