"""The result cache: answers keyed by model version and by image URL or image content.

It stores entries and runs single flight (identical concurrent misses compute once, across
workers too). Counting lookups is ``cache_statistics``'s; a request's lookup, which takes its
rate limit and is counted in the same Redis round trip, is ``cache_lookup.admit_and_read``.

Values are JSON (django-redis' JSON serializer, or plain dicts in local memory), never pickle.
Keys carry the model name and version, so a promotion never serves an old answer. A Redis that
is down, failing or hung costs at most one short socket timeout: a breaker then skips the
cache for CACHE_BREAKER_SECONDS, and the outage is logged when it starts and ends, not per request.

With Redis it also holds values that workers share besides answers (``shared_get_many``,
``shared_set_many``): the zero-shot models' label embeddings.
"""

import hashlib
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.cache import BaseCache, caches

from core.cache_breaker import cache_breaker
from core.redis_scripts import is_redis, redis_script_run
from core.singleton import ProcessSingleton

KINDS = ("url", "image")
_COUNT_LIMIT = 100_000  # entries counted at most by /cache-stats (a SCAN, never KEYS)

# Store a computed entry (unless ARGV[1] is empty) for ARGV[2] seconds and release the
# single-flight lock, only if it still holds this worker's token: a lock that expired and was
# taken by another worker is left alone.
_STORE_AND_RELEASE_SCRIPT = """
if ARGV[1] ~= '' then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return 1
"""


@dataclass
class _Flight:
    """One computation that identical concurrent misses in this process wait for."""

    done: threading.Event = field(default_factory=threading.Event)
    value: dict | None = None
    error: BaseException | None = None


class ResultCache:
    def __init__(self, *, alias: str = "default") -> None:
        self.alias = alias
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight] = {}

    # --- keys and plumbing ----------------------------------------------------------------

    @property
    def cache(self) -> BaseCache:
        return caches[self.alias]

    @property
    def shared(self) -> bool:
        """Whether every worker sees the same entries (Redis)."""
        return is_redis(self.cache)

    @staticmethod
    def key(
        *, kind: str, model_name: str, model_version: int, identity: str, labels_digest: str = ""
    ) -> str:
        """``identity`` is the exact image URL (hashed here) or the image's SHA-256.

        ``labels_digest`` names a request's own label set (zero-shot models): answers to other
        label sets, or to the version's own labels (no digest), are other entries.
        """
        digest = hashlib.sha256(identity.encode()).hexdigest() if kind == "url" else identity
        key = f"result:{kind}:{model_name}:{model_version}:{digest}"
        return f"{key}:labels-{labels_digest}" if labels_digest else key

    def ttl(self, kind: str) -> int:
        """Seconds an entry of ``kind`` lives."""
        return settings.CACHE_URL_TTL if kind == "url" else settings.CACHE_IMAGE_TTL

    def available(self) -> bool:
        return cache_breaker.available()

    def fault(self, exc: BaseException) -> None:
        """A cache call failed: the breaker rests the cache (and logs an outage's start)."""
        cache_breaker.record_fault(exc, what="a result cache call")

    # --- reads and writes -----------------------------------------------------------------

    def get(self, *, key: str) -> dict | None:
        """The entry of ``key``, or None on a miss or when the cache is unavailable; uncounted
        (a request's lookup is ``cache_lookup.admit_and_read``)."""
        if not self.available():
            return None
        try:
            value = self.cache.get(key)
        except Exception as exc:
            self.fault(exc)
            return None
        cache_breaker.record_success()
        return value if isinstance(value, dict) else None

    def decode(self, raw: bytes | None) -> dict | None:
        """An entry as a Redis script returned it (None: there was none)."""
        value = None if raw is None else self.cache.client.decode(raw)  # type: ignore[attr-defined]
        return value if isinstance(value, dict) else None

    def set(self, *, kind: str, key: str, value: dict) -> None:
        if not self.available():
            return
        try:
            self.cache.set(key, value, timeout=self.ttl(kind))
        except Exception as exc:
            self.fault(exc)

    # --- single flight --------------------------------------------------------------------

    def single_flight(
        self, key: str, compute: Callable[[], dict], *, kind: str
    ) -> tuple[dict, bool]:
        """Run ``compute`` once for concurrent misses of ``key``, and store its entry.

        Returns the entry and whether this call computed it. Threads of this process wait for
        the one computing; other workers wait on a Redis lock, which the computing worker
        releases in the same call that stores the entry. Waits are bounded by
        CACHE_SINGLE_FLIGHT_WAIT, after which a waiter computes by itself. An error of
        ``compute`` is raised to every waiter of this process and never stored.
        """
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if leader:
                flight = self._flights[key] = _Flight()
        assert flight is not None
        if not leader:
            if flight.done.wait(settings.CACHE_SINGLE_FLIGHT_WAIT):
                if flight.error is not None:
                    raise flight.error
                if flight.value is not None:
                    return flight.value, False
            return self._compute_and_store(kind, key, compute), True
        try:
            flight.value, computed = self._across_workers(kind, key, compute)
            return flight.value, computed
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            flight.done.set()
            with self._lock:
                self._flights.pop(key, None)

    def _compute_and_store(self, kind: str, key: str, compute: Callable[[], dict]) -> dict:
        value = compute()
        self.set(kind=kind, key=key, value=value)
        return value

    def _across_workers(
        self, kind: str, key: str, compute: Callable[[], dict]
    ) -> tuple[dict, bool]:
        if not self.shared or not self.available():
            return self._compute_and_store(kind, key, compute), True
        lock_key, token = f"{key}:lock", uuid.uuid4().hex
        wait = settings.CACHE_SINGLE_FLIGHT_WAIT
        try:
            acquired = self.cache.add(lock_key, token, timeout=int(wait) + 1)
        except Exception as exc:
            self.fault(exc)
            return self._compute_and_store(kind, key, compute), True
        if acquired:
            try:
                value = compute()
            except BaseException:
                self._store_and_release(kind, key, None, lock_key=lock_key, token=token)
                raise
            self._store_and_release(kind, key, value, lock_key=lock_key, token=token)
            return value, True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and self.available():
            time.sleep(0.01)
            try:
                value = self.cache.get(key)
                if isinstance(value, dict):
                    return value, False
                if self.cache.get(lock_key) is None:  # the other worker gave up or failed
                    break
            except Exception as exc:
                self.fault(exc)
                break
        return self._compute_and_store(kind, key, compute), True

    def _store_and_release(
        self, kind: str, key: str, value: dict | None, *, lock_key: str, token: str
    ) -> None:
        """Store ``value`` (None: nothing to store) and release the lock if this worker still
        holds it, in one round trip; never raises."""
        if not self.available():
            return
        client = self.cache.client  # type: ignore[attr-defined]
        try:
            redis_script_run(
                cache=self.cache,
                source=_STORE_AND_RELEASE_SCRIPT,
                keys=[key, lock_key],
                args=[
                    "" if value is None else client.encode(value),
                    self.ttl(kind),
                    client.encode(token),
                ],
            )
        except Exception as exc:
            self.fault(exc)

    # --- values shared by the workers (Redis only) -----------------------------------------
    # Local memory is one process's alone, and its entries (Django's default: 300) are the
    # answers': a copy there of what the worker already keeps in memory would only evict them.

    def shared_get_many(self, keys: list[str]) -> dict[str, Any]:
        """The values any worker stored under ``keys`` (one round trip), by key: those found.

        Empty with local memory, and when Redis is unavailable or fails (the breaker then skips
        it for a while); never raises. Not counted as result cache lookups.
        """
        if not keys or not self.shared or not self.available():
            return {}
        try:
            found = self.cache.get_many(keys)
        except Exception as exc:
            self.fault(exc)
            return {}
        cache_breaker.record_success()
        return found

    def shared_set_many(self, values: dict[str, Any], *, timeout: int) -> None:
        """Store JSON ``values`` by key for every worker (one round trip); nothing with local
        memory or while Redis is unavailable; never raises."""
        if not values or not self.shared or not self.available():
            return
        try:
            self.cache.set_many(values, timeout=timeout)
        except Exception as exc:
            self.fault(exc)

    # --- what /cache-stats and the health check ask -----------------------------------------

    def ping(self) -> bool:
        """Whether the cache answers now (always, for local memory); a fault opens the breaker."""
        if not self.shared:
            return True
        if not self.available():
            return False
        try:
            self.cache.client.get_client(write=False).ping()  # type: ignore[attr-defined]
            return True
        except Exception as exc:
            self.fault(exc)
            return False

    def entries(self, kind: str) -> int | None:
        """How many entries of ``kind`` there are (at most 100,000 counted; None where the
        backend cannot count them). Raises what redis-py raises."""
        if not self.shared:
            store = getattr(self.cache, "_cache", None)
            if store is None:
                return None
            marker = f":result:{kind}:"
            return sum(1 for key in list(store) if marker in key and not key.endswith(":lock"))
        client = self.cache.client.get_client(write=False)  # type: ignore[attr-defined]
        pattern = self.cache.make_key(f"result:{kind}:*")
        count = 0
        for key in client.scan_iter(match=pattern, count=1000):
            if not key.endswith(b":lock"):
                count += 1
            if count >= _COUNT_LIMIT:
                break
        return count


_result_cache = ProcessSingleton(ResultCache)


def get_result_cache() -> ResultCache:
    """The process-wide result cache, created on first use."""
    return _result_cache.get()


def reset_result_cache() -> None:
    _result_cache.reset()
