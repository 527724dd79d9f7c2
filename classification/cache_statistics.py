"""Hits and misses of the result cache, per key kind, for /cache-stats and the metrics.

With Redis the counters are one hash shared by every worker; in local memory they are this
process's. A request's lookup is counted inside the script that reads the entry
(``cache_lookup``, with ``COUNT_LOOKUP_LUA``), so counting costs it no round trip of its own.
"""

import threading
from collections import Counter
from datetime import datetime

from django.core.cache import BaseCache, caches
from django.utils import timezone

from classification import metrics
from core.cache_breaker import cache_breaker
from core.metrics import labelled
from core.redis_scripts import is_redis
from core.singleton import ProcessSingleton

STATS_KEY = "result-cache:stats"

# count_lookup(KEYS[n] = STATS_KEY, kind, found, now): a Lua function for scripts that read an
# entry; ``found`` is the entry read (false when there was none), ``now`` an ISO time.
COUNT_LOOKUP_LUA = """
local function count_lookup(stats, kind, found, now)
  redis.call('HINCRBY', stats, kind .. (found and ':hits' or ':misses'), 1)
  redis.call('HSETNX', stats, 'started_at', now)
end
"""


class CacheStatistics:
    def __init__(self, *, alias: str = "default") -> None:
        self.alias = alias
        self._lock = threading.Lock()
        self._local_counts: Counter[str] = Counter()
        self._local_started = timezone.now()

    @property
    def cache(self) -> BaseCache:
        return caches[self.alias]

    @property
    def shared(self) -> bool:
        """Whether the counters are every worker's (Redis) or this process's."""
        return is_redis(self.cache)

    def script_arguments(self, kind: str) -> tuple[list[str], list[str]]:
        """The KEYS and ARGV (but ``found``) of ``count_lookup`` for a lookup of ``kind``."""
        return [STATS_KEY], [kind, timezone.now().isoformat()]

    def counted_by_script(self, *, kind: str, hit: bool) -> None:
        """A lookup that a script counted in Redis (``count_lookup``): the metric only."""
        labelled(metrics.CACHE_LOOKUPS, kind, "hit" if hit else "miss").inc()

    def count(self, *, kind: str, hit: bool) -> None:
        """Count a lookup of ``kind`` in the counters and the metric; never raises."""
        self.counted_by_script(kind=kind, hit=hit)
        field = f"{kind}:{'hits' if hit else 'misses'}"
        if not self.shared:
            with self._lock:
                self._local_counts[field] += 1
            return
        try:
            client = self.cache.client.get_client(write=True)  # type: ignore[attr-defined]
            stats_key = self.cache.make_key(STATS_KEY)
            pipe = client.pipeline(transaction=False)
            pipe.hincrby(stats_key, field, 1)
            pipe.hsetnx(stats_key, "started_at", timezone.now().isoformat())
            pipe.execute()
        except Exception as exc:
            cache_breaker.record_fault(exc, what="a result cache call")

    def counts(self) -> tuple[Counter[str], datetime | None]:
        """The counters ("<kind>:hits", "<kind>:misses") and when they started; raises what
        redis-py raises."""
        if not self.shared:
            with self._lock:
                return self._local_counts.copy(), self._local_started
        client = self.cache.client.get_client(write=False)  # type: ignore[attr-defined]
        raw = client.hgetall(self.cache.make_key(STATS_KEY))
        decoded = {k.decode(): v.decode() for k, v in raw.items()}
        started_at = decoded.pop("started_at", None)
        # A datetime, as with local memory, so that both backends render it the same way.
        started = datetime.fromisoformat(started_at) if started_at else None
        return Counter({k: int(v) for k, v in decoded.items()}), started

    def reset(self) -> None:
        """Start the counters again from zero (tests, and operators after a change)."""
        with self._lock:
            self._local_counts.clear()
            self._local_started = timezone.now()
        if self.shared:
            self.cache.delete(STATS_KEY)


_cache_statistics = ProcessSingleton(CacheStatistics)


def get_cache_statistics() -> CacheStatistics:
    """The process-wide counters, created on first use."""
    return _cache_statistics.get()


def reset_cache_statistics() -> None:
    _cache_statistics.reset()
