"""Lua scripts on the shared cache's Redis: one atomic round trip for a read-modify-write.

A script is sent by its SHA-1 (EVALSHA), computed once per process, and loaded into Redis on
its first use there (redis-py's Script does the NOSCRIPT retry). EVAL would send the script's
text with every call, and ``register_script`` per call would hash it every time.
"""

import functools
from typing import Any

from django.core.cache import BaseCache, caches
from redis.commands.core import Script


def cache_backend(alias: str = "default") -> BaseCache:
    """The cache backend itself: ``django.core.cache.cache`` is a proxy whose type hides it."""
    return caches[alias]


def is_redis(cache: BaseCache) -> bool:
    """Whether ``cache`` is django-redis (a proxy is not: pass ``cache_backend()``)."""
    return type(cache).__module__.startswith("django_redis")


@functools.cache
def _script(source: str) -> Script:
    # Script needs a client only for the encoding of the text; each call names its own.
    return Script(None, source.encode())  # type: ignore[arg-type]


def redis_script_run(*, cache: BaseCache, source: str, keys: list[str], args: list[Any]) -> Any:
    """Run the Lua ``source`` atomically on ``cache``'s Redis with ``keys`` (cache keys, given
    unprefixed: the cache's key prefix and version are applied here) and ``args``.

    Raises what redis-py raises for a Redis that cannot be reached or refuses the script.
    """
    client = cache.client.get_client(write=True)  # type: ignore[attr-defined]
    return _script(source)(keys=[cache.make_key(key) for key in keys], args=args, client=client)
