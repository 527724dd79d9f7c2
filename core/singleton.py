"""One lazily created object per process, for the heavy things (model runtime, result cache)."""

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class ProcessSingleton(Generic[T]):
    """Creates its object with ``factory`` on first ``get()``, once even when threads race.

    ``functools.cache`` would let two racing threads each build one (two loaded models, say);
    this holds a lock while building and never again after.
    """

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._instance: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        instance = self._instance
        if instance is None:
            with self._lock:
                if self._instance is None:
                    self._instance = self._factory()
                instance = self._instance
        return instance

    def reset(self) -> None:
        """Forget the object; the next ``get()`` builds a new one (tests, changed settings)."""
        with self._lock:
            self._instance = None
