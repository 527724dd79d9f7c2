"""Waiting for something another thread or process does."""

import time
from collections.abc import Callable


def wait_for(condition: Callable[[], bool], *, timeout: float = 20.0) -> None:
    """Poll until ``condition`` holds (a wait, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("the condition never held")
