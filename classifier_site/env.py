"""Tiny typed readers for settings that come from environment variables."""

import ipaddress
import os

from django.core.exceptions import ImproperlyConfigured

from core.secret_keys import secret_weakness

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), not {raw!r}")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, not {raw!r}") from exc


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a number, not {raw!r}") from exc


def env_secret(name: str, *, production: bool) -> str:
    """A secret from the environment; empty when unset. With ``production`` a missing, short
    or placeholder value is a start-up error naming the variable, never a warning."""
    value = os.environ.get(name, "")
    if not production:
        return value
    if not value:
        raise ImproperlyConfigured(f"{name} must be set when PRODUCTION=1.")
    weakness = secret_weakness(value)
    if weakness:
        raise ImproperlyConfigured(
            f"{name} {weakness}: set it to a long random value when PRODUCTION=1 "
            "(python3 -c 'import secrets; print(secrets.token_urlsafe(50))')."
        )
    return value


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_networks(name: str, default: str = "") -> list[str]:
    """A comma-separated list of CIDRs (``10.0.0.0/8,::1/128``), each checked to be one."""
    networks = env_list(name, default)
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError as exc:
            raise ImproperlyConfigured(
                f"{name}: {network!r} is not a CIDR like 10.0.0.0/8"
            ) from exc
    return networks


def cache_settings(
    *, redis_url: str, key_prefix: str, socket_timeout: float, location: str = ""
) -> dict:
    """Django's CACHES: django-redis at ``redis_url`` (JSON values, never pickle, bounded
    socket waits), or the in-process local-memory cache when ``redis_url`` is empty."""
    if not redis_url:
        local: dict = {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "KEY_PREFIX": key_prefix,
        }
        if location:
            local["LOCATION"] = location
        return {"default": local}
    return {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": redis_url,
            "KEY_PREFIX": key_prefix,
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                "SERIALIZER": "django_redis.serializers.json.JSONSerializer",
                "SOCKET_CONNECT_TIMEOUT": socket_timeout,
                "SOCKET_TIMEOUT": socket_timeout,
            },
        }
    }


def postgres_timeout_options(*, statement_timeout: float, lock_timeout: float) -> str:
    """libpq ``options`` that set ``statement_timeout`` and ``lock_timeout`` (seconds; 0 or
    less: no limit) on every connection, so no query of ours waits for longer."""
    limits = {"statement_timeout": statement_timeout, "lock_timeout": lock_timeout}
    parts = [f"-c {name}={round(value * 1000)}" for name, value in limits.items() if value > 0]
    return " ".join(parts)
