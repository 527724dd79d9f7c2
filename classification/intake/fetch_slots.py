"""How many image_url fetches this process runs at once, in total and per client.

A fetch holds a request thread for as long as the image's server takes (up to
IMAGE_FETCH_TIMEOUT), and a server dripping a byte a second takes all of it: with no bound, a
few such URLs occupy every thread and the worker stops answering anything, health probes
included. So a fetch needs a slot: at most IMAGE_FETCH_CONCURRENCY per process (well below the
thread count, so that uploads, cache hits and probes always find a thread) and at most
IMAGE_FETCH_PER_CLIENT per client address. Without a free slot the request is answered at once,
503 ``busy`` with Retry-After, rather than queued behind the slow ones.
"""

import contextlib
import threading
from collections.abc import Iterator

from django.conf import settings

from core.errors import ServiceBusy


class FetchSlots:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_use = 0
        self._per_client: dict[str, int] = {}

    @contextlib.contextmanager
    def held(self, *, client: str | None) -> Iterator[None]:
        """Hold a slot for one fetch by ``client`` (an address; None: counted in total only).

        Raises ServiceBusy, without waiting, when the process or that client has none free.
        """
        with self._lock:
            if self._in_use >= settings.IMAGE_FETCH_CONCURRENCY:
                raise ServiceBusy(
                    "The service is fetching as many images as it can; try again shortly.",
                    retry_after=settings.IMAGE_FETCH_RETRY_AFTER,
                )
            if client is not None and self._per_client.get(client, 0) >= (
                settings.IMAGE_FETCH_PER_CLIENT
            ):
                raise ServiceBusy(
                    "Too many of your image URLs are being fetched; try again shortly.",
                    retry_after=settings.IMAGE_FETCH_RETRY_AFTER,
                )
            self._in_use += 1
            if client is not None:
                self._per_client[client] = self._per_client.get(client, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._in_use -= 1
                if client is not None:
                    left = self._per_client[client] - 1
                    if left:
                        self._per_client[client] = left
                    else:
                        del self._per_client[client]

    def in_use(self) -> int:
        with self._lock:
            return self._in_use


fetch_slots = FetchSlots()
