"""A request's result-cache lookup: admit (its rate limit), then read the entry and count it.

Three small objects, each its own: the request's ``Admission`` (accounts.throttling), the
``ResultCache`` that stores entries, the ``CacheStatistics`` that count lookups. On Redis this
puts their three steps in one Lua script, so a cache hit is one round trip, the rate limit
included (docs/performance.md measures it); in local memory they are three calls in a row.
"""

import time

from rest_framework.exceptions import Throttled

from accounts.throttling import GCRA_LUA, Admission
from classification.cache_statistics import (
    COUNT_LOOKUP_LUA,
    CacheStatistics,
    get_cache_statistics,
)
from classification.caching import ResultCache, get_result_cache
from core.cache_breaker import cache_breaker
from core.redis_scripts import redis_script_run

# KEYS: the entry, the statistics; ARGV: the kind, now (ISO). Returns the entry or nil.
_READ_LUA = """
local function read_counted(key, stats, kind, now)
  local value = redis.call('GET', key)
  count_lookup(stats, kind, value, now)
  return value
end
"""
_READ_SCRIPT = (
    COUNT_LOOKUP_LUA + _READ_LUA + "return read_counted(KEYS[1], KEYS[2], ARGV[1], ARGV[2])"
)
# The same after the rate limit (KEYS[3]; ARGV[3..5] as gcra() takes them): {wait_ms} when it
# refuses (nothing read or counted), else {0, the entry or nil}.
_ADMIT_AND_READ_SCRIPT = (
    GCRA_LUA
    + COUNT_LOOKUP_LUA
    + _READ_LUA
    + """
local wait = gcra(KEYS[3], ARGV[3], ARGV[4], ARGV[5])
if wait > 0 then return {wait} end
return {0, read_counted(KEYS[1], KEYS[2], ARGV[1], ARGV[2])}
"""
)


def admit_and_read(*, admission: Admission | None, kind: str, key: str) -> dict | None:
    """Take ``admission`` if it is still to be taken, then read the entry of ``key`` and count
    the lookup as a hit or a miss of ``kind``.

    Returns the entry, or None on a miss or while the cache is unavailable (the rate limit
    then fails open). Raises Throttled when the rate limit refuses the request: nothing is
    read or counted then.
    """
    cache, statistics = get_result_cache(), get_cache_statistics()
    if cache.shared and cache.available():
        return _in_one_script(
            cache=cache, statistics=statistics, admission=admission, kind=kind, key=key
        )
    # Local memory, or a Redis the breaker is resting (the limit fails open): one by one.
    if admission is not None and (wait := admission.take()):
        raise Throttled(wait)
    if not cache.available():
        return None
    entry = cache.get(key=key)
    statistics.count(kind=kind, hit=entry is not None)
    return entry


def _in_one_script(
    *,
    cache: ResultCache,
    statistics: CacheStatistics,
    admission: Admission | None,
    kind: str,
    key: str,
) -> dict | None:
    """``admit_and_read`` on Redis: the limit still pending, the GET and the count, one call."""
    rate_limit = admission.pending if admission is not None else None
    stats_keys, stats_args = statistics.script_arguments(kind)
    keys, args = [key, *stats_keys], stats_args
    try:
        if rate_limit is None:
            wait_ms = 0
            raw = redis_script_run(cache=cache.cache, source=_READ_SCRIPT, keys=keys, args=args)
        else:
            wait_ms, *found = redis_script_run(
                cache=cache.cache,
                source=_ADMIT_AND_READ_SCRIPT,
                keys=[*keys, rate_limit.key],
                args=[*args, *rate_limit.gcra_args(time.time())],
            )
            raw = found[0] if found else None
    except Exception as exc:
        cache.fault(exc)
        if admission is not None and rate_limit is not None:
            admission.taken_with(None)  # it could not be taken: the request goes unthrottled
        return None
    cache_breaker.record_success()
    if admission is not None and rate_limit is not None and (wait := admission.taken_with(wait_ms)):
        raise Throttled(wait)
    entry = cache.decode(raw)
    statistics.counted_by_script(kind=kind, hit=entry is not None)
    return entry
