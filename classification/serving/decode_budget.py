"""How many pixels this process decodes at once.

A compressed image is small on the wire and large in memory: a 100 kB PNG of 36 megapixels
decodes to 108 MB of RGB, and its conversion and resize copy it again, so eight of them in
flight cost a gigabyte though the requests were 800 kB. Each decode therefore takes the pixels
it will decode (a JPEG decoded reduced takes its reduced size) from a per-process budget
(IMAGE_DECODE_PIXEL_BUDGET) before the first pixel is decoded, and gives them back once the
model's small input is made. Decodes take the budget in the order they asked for it: one that
does not fit waits, and so does every one behind it, up to IMAGE_DECODE_WAIT seconds, then it
is answered 503 ``busy``. An image larger than the whole budget (allowed by IMAGE_MAX_PIXELS)
decodes alone.

The order matters under load: with waiters woken in no order, a camera-size PNG could lose
every wake-up to later ones and time out while the others were served.
"""

import collections
import contextlib
import threading
import time
from collections.abc import Iterator

from django.conf import settings

from core.errors import ServiceBusy


class PixelBudget:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._in_flight = 0
        self._waiting: collections.deque[object] = collections.deque()

    @contextlib.contextmanager
    def held(self, *, pixels: int) -> Iterator[None]:
        """Hold ``pixels`` of the budget; raises ServiceBusy after IMAGE_DECODE_WAIT seconds."""
        budget, wait = settings.IMAGE_DECODE_PIXEL_BUDGET, settings.IMAGE_DECODE_WAIT
        deadline = time.monotonic() + wait
        turn = object()
        with self._changed:
            self._waiting.append(turn)
            try:
                while self._waiting[0] is not turn or (
                    self._in_flight and self._in_flight + pixels > budget
                ):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise ServiceBusy(
                            "The service is decoding as many large images as it can; try "
                            "again shortly.",
                            retry_after=max(1, round(wait)),
                        )
                    self._changed.wait(left)
            finally:
                self._waiting.remove(turn)
                self._changed.notify_all()  # the next in line may fit now, or be first
            self._in_flight += pixels
        try:
            yield
        finally:
            with self._changed:
                self._in_flight -= pixels
                self._changed.notify_all()

    def in_flight(self) -> int:
        with self._changed:
            return self._in_flight

    def waiting(self) -> int:
        with self._changed:
            return len(self._waiting)


decode_budget = PixelBudget()
