"""The result cache: answers keyed by model version and by image URL or image content.

Values are JSON (django-redis' JSON serializer, or plain dicts in local memory), never pickle.
Keys carry the model name and version, so a promotion never serves an old answer. A Redis that
is down, failing or hung costs at most one short socket timeout: a breaker then skips the
cache for CACHE_BREAKER_SECONDS, and the outage is logged when it starts and ends, not per request.

With Redis it also holds values that workers share besides answers (``shared_get_many``,
``shared_set_many``): the zero-shot models' label embeddings.
"""

import hashlib
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.cache import BaseCache, caches
from django.utils import timezone
from rest_framework.exceptions import Throttled

from accounts.throttling import GCRA_LUA, Admission, gcra_acquire
from classification import metrics
from core.cache_breaker import cache_breaker
from core.redis_scripts import is_redis, redis_script_run
from core.singleton import ProcessSingleton

logger = logging.getLogger(__name__)

KINDS = ("url", "image")
_STATS_KEY = "result-cache:stats"
_COUNT_LIMIT = 100_000  # entries counted at most by /cache-stats (a SCAN, never KEYS)
# GET an entry and count the lookup as a hit or a miss of its kind, in one Redis call.
_GET_COUNTED_LUA = """
local function get_counted(key, stats, kind, now)
  local value = redis.call('GET', key)
  redis.call('HINCRBY', stats, kind .. (value and ':hits' or ':misses'), 1)
  redis.call('HSETNX', stats, 'started_at', now)
  return value
end
"""
_GET_COUNTED_SCRIPT = _GET_COUNTED_LUA + "return get_counted(KEYS[1], KEYS[2], ARGV[1], ARGV[2])"
# The same after taking the caller's rate limit: {wait_ms} when refused (nothing looked up or
# counted), else {0, value}. A hit is then one round trip, the limit included.
_ADMIT_AND_GET_COUNTED_SCRIPT = (
    GCRA_LUA
    + _GET_COUNTED_LUA
    + """
local wait = gcra(KEYS[3], ARGV[3], ARGV[4], ARGV[5])
if wait > 0 then return {wait} end
return {0, get_counted(KEYS[1], KEYS[2], ARGV[1], ARGV[2])}
"""
)

# Store a computed entry (unless ARGV[1] is empty) and release the single-flight lock, only if
# it still holds this worker's token: a lock that expired and was taken by another worker is
# left alone.
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
        self._local_counts: Counter[str] = Counter()
        self._local_started = timezone.now()

    # --- keys and plumbing ----------------------------------------------------------------

    @property
    def cache(self) -> BaseCache:
        return caches[self.alias]

    @property
    def shared(self) -> bool:
        """Whether every worker sees the same entries and counters (Redis)."""
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
        return settings.CACHE_URL_TTL if kind == "url" else settings.CACHE_IMAGE_TTL

    def available(self) -> bool:
        return cache_breaker.available()

    def _fault(self, exc: BaseException) -> None:
        cache_breaker.record_fault(exc, what="a result cache call")

    # --- reads and writes -----------------------------------------------------------------

    def get(self, *, kind: str, key: str, admission: Admission | None = None) -> dict | None:
        """The cached entry, or None on a miss or when the cache is unavailable.

        The lookup is counted as a hit or a miss; with Redis, the lookup and the count are one
        round trip (a Lua script), so a hit costs one call, not two. An ``admission`` not taken
        yet (the request's rate limit) is taken first, in that same round trip; raises
        Throttled when the limit is exceeded. Without the cache the limit fails open.
        """
        admit = admission if admission is not None and not admission.taken else None
        if not self.available():
            if admit is not None:
                admit.taken_with(None)
            return None
        try:
            get_counted = self._get_counted_in_redis if self.shared else self._get_counted_here
            wait_ms, value = get_counted(kind=kind, key=key, admission=admit)
        except Exception as exc:
            self._fault(exc)
            if admit is not None:
                admit.taken_with(None)
            return None
        cache_breaker.record_success()
        if admit is not None and (wait := admit.taken_with(wait_ms)):
            raise Throttled(wait)
        metrics.CACHE_LOOKUPS.labels(kind, "hit" if value is not None else "miss").inc()
        return value if isinstance(value, dict) else None

    def _get_counted_here(
        self, *, kind: str, key: str, admission: Admission | None
    ) -> tuple[float, Any]:
        """Local memory: the rate limit (GCRA under a lock), then the lookup and its count."""
        if admission is not None:
            assert admission.rate_limit is not None  # not taken yet
            wait = gcra_acquire(cache=self.cache, rate_limit=admission.rate_limit, now=time.time())
            if wait:
                return wait * 1000, None
        value = self.cache.get(key)
        self._count(kind, "hits" if value is not None else "misses")
        return 0.0, value

    def _get_counted_in_redis(
        self, *, kind: str, key: str, admission: Admission | None
    ) -> tuple[float, Any]:
        """(the wait in ms that the rate limit asks for, 0 when allowed; the entry or None)."""
        keys, args = [key, _STATS_KEY], [kind, timezone.now().isoformat()]
        if admission is None:
            raw = redis_script_run(
                cache=self.cache, source=_GET_COUNTED_SCRIPT, keys=keys, args=args
            )
            wait_ms = 0.0
        else:
            rate_limit = admission.rate_limit
            assert rate_limit is not None  # not taken yet
            wait_ms, *found = redis_script_run(
                cache=self.cache,
                source=_ADMIT_AND_GET_COUNTED_SCRIPT,
                keys=[*keys, rate_limit.key],
                args=[*args, *rate_limit.gcra_args(time.time())],
            )
            raw = found[0] if found else None
        value = None if raw is None else self.cache.client.decode(raw)  # type: ignore[attr-defined]
        return wait_ms, value

    def set(self, *, kind: str, key: str, value: dict) -> None:
        if not self.available():
            return
        try:
            self.cache.set(key, value, timeout=self.ttl(kind))
        except Exception as exc:
            self._fault(exc)

    def _count(self, kind: str, outcome: str) -> None:
        if not self.shared:
            with self._lock:
                self._local_counts[f"{kind}:{outcome}"] += 1
            return
        try:
            client = self.cache.client.get_client(write=True)  # type: ignore[attr-defined]
            stats_key = self.cache.make_key(_STATS_KEY)
            pipe = client.pipeline(transaction=False)
            pipe.hincrby(stats_key, f"{kind}:{outcome}", 1)
            pipe.hsetnx(stats_key, "started_at", timezone.now().isoformat())
            pipe.execute()
        except Exception as exc:
            self._fault(exc)

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
            self._fault(exc)
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
                self._fault(exc)
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
            self._fault(exc)

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
            self._fault(exc)
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
            self._fault(exc)

    # --- statistics -----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Hits, misses and hit rates (overall and per kind), entries, TTLs and status."""
        status = "up" if self._ping() else "down"
        counts = self._local_counts.copy()
        # A datetime here, an ISO string from Redis: the output serializer takes either.
        started_at: datetime | None = self._local_started
        entries: dict[str, int | None] = {}
        if self.shared and status == "up":
            try:
                counts, started_at = self._shared_counts()
                entries = {kind: self._count_entries(kind) for kind in KINDS}
            except Exception as exc:
                self._fault(exc)
                status = "down"
        elif not self.shared:
            entries = {kind: self._count_local_entries(kind) for kind in KINDS}

        def rates(hits: int, misses: int) -> dict[str, Any]:
            total = hits + misses
            return {"hits": hits, "misses": misses, "hit_rate": hits / total if total else 0.0}

        by_kind = {}
        for kind in KINDS:
            by_kind[kind] = {
                **rates(counts[f"{kind}:hits"], counts[f"{kind}:misses"]),
                "entries": entries.get(kind),
                "ttl_seconds": self.ttl(kind),
            }
        total_hits = sum(by_kind[kind]["hits"] for kind in KINDS)
        total_misses = sum(by_kind[kind]["misses"] for kind in KINDS)
        return {
            "backend": "redis" if self.shared else "local-memory",
            "status": status,
            "counters_scope": "all workers" if self.shared else "this worker process only",
            **rates(total_hits, total_misses),
            "by_kind": by_kind,
            "counters_started_at": started_at,
        }

    def ping(self) -> bool:
        """Whether the cache answers now (always, for local memory); a fault opens the breaker."""
        return self._ping()

    def _ping(self) -> bool:
        if not self.shared:
            return True
        if not self.available():
            return False
        try:
            self.cache.client.get_client(write=False).ping()  # type: ignore[attr-defined]
            return True
        except Exception as exc:
            self._fault(exc)
            return False

    def _shared_counts(self) -> tuple[Counter[str], datetime | None]:
        client = self.cache.client.get_client(write=False)  # type: ignore[attr-defined]
        raw = client.hgetall(self.cache.make_key(_STATS_KEY))
        decoded = {k.decode(): v.decode() for k, v in raw.items()}
        started_at = decoded.pop("started_at", None)
        # A datetime, as with local memory, so that both backends render it the same way.
        started = datetime.fromisoformat(started_at) if started_at else None
        return Counter({k: int(v) for k, v in decoded.items()}), started

    def _count_entries(self, kind: str) -> int:
        client = self.cache.client.get_client(write=False)  # type: ignore[attr-defined]
        pattern = self.cache.make_key(f"result:{kind}:*")
        count = 0
        for key in client.scan_iter(match=pattern, count=1000):
            if not key.endswith(b":lock"):
                count += 1
            if count >= _COUNT_LIMIT:
                break
        return count

    def _count_local_entries(self, kind: str) -> int | None:
        store = getattr(self.cache, "_cache", None)
        if store is None:
            return None
        marker = f":result:{kind}:"
        return sum(1 for key in list(store) if marker in key and not key.endswith(":lock"))

    def reset_counters(self) -> None:
        """Start the counters again from zero (tests, and operators after a change)."""
        with self._lock:
            self._local_counts.clear()
            self._local_started = timezone.now()
        if self.shared:
            self.cache.delete(_STATS_KEY)


_result_cache = ProcessSingleton(ResultCache)


def get_result_cache() -> ResultCache:
    """The process-wide result cache, created on first use."""
    return _result_cache.get()


def reset_result_cache() -> None:
    _result_cache.reset()
