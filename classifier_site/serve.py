"""``python -m classifier_site.serve``: the service over HTTP, as ``make run``, the image and the
tests start it.

WEB_SERVER picks the HTTP server:

- ``granian`` (the default): a Rust HTTP server reading requests asynchronously, serving
  ``classifier_site.asgi`` (core.front: bodies read on the event loop, Django in a pool of
  WEB_THREADS threads). Request line and headers must arrive within REQUEST_HEADER_TIMEOUT
  seconds, bodies within REQUEST_BODY_TIMEOUT, so slow clients hold no thread.
- ``gunicorn``: gunicorn's threaded workers serving ``classifier_site.wsgi``
  (classifier_site/gunicorn.py), the server before; kept so that ``bench loadtest`` measures
  both side by side. A client that sends its headers slowly holds one of its threads.

Both bind HOST:PORT with WEB_CONCURRENCY worker processes, load each worker's model before it
takes traffic, write out the request log when a worker stops, and share one prometheus-client
folder. This process imports nothing from Django: each worker loads it for itself.
"""

import logging
import os
import shutil
import sys
from urllib.parse import urlsplit

from core.lifecycle import GRACEFUL_TIMEOUT_DEFAULT, metrics_folder_prepare
from core.logs import JsonLineFormatter

# Granian's own bound on its header timeout, in milliseconds.
_HEADER_TIMEOUT_MAX_MS = 60_000


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        return float(raw) if raw else default
    except ValueError:
        sys.exit(f"{name} must be a number, not {raw!r}")


def _production() -> bool:
    return os.environ.get("PRODUCTION", "").strip().lower() in {"1", "true", "yes", "on"}


def _log_config() -> dict:
    """Granian's own log lines as JSON with LOG_FORMAT=json (the default when PRODUCTION=1)."""
    fmt = os.environ.get("LOG_FORMAT", "json" if _production() else "plain").strip().lower()
    if fmt != "json":
        return {}
    return {
        "formatters": {"json": {"()": "core.logs.JsonLineFormatter"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
        "loggers": {"_granian": {"handlers": ["console"], "level": "INFO", "propagate": False}},
    }


def _cache_announce() -> None:
    """Say at start which result cache the workers share (or do not share)."""
    redis_url = os.environ.get("REDIS_URL", "")
    if redis_url:
        parts = urlsplit(redis_url)
        where = f"{parts.hostname}:{parts.port or 6379}{parts.path}"  # never the password
        message = f"Result cache and throttles: Redis at {where}, shared by all workers"
    else:
        message = "Result cache and throttles: local memory, one per worker (no REDIS_URL)"
    handler = logging.StreamHandler()
    if _log_config():
        handler.setFormatter(JsonLineFormatter())
    logger = logging.getLogger("classifier_site.serve")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.info(message)
    logger.removeHandler(handler)


def granian_serve() -> None:
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings

    header_timeout_ms = int(_number("REQUEST_HEADER_TIMEOUT", 10.0) * 1000)
    lifetime = int(_number("WEB_WORKER_LIFETIME", 0))
    max_rss = int(_number("WEB_WORKER_MAX_RSS_MB", 0))
    server = Granian(
        "classifier_site.asgi:application",
        address=os.environ.get("HOST", "127.0.0.1"),
        port=int(_number("PORT", 8000)),
        interface=Interfaces.ASGI,
        workers=int(_number("WEB_CONCURRENCY", 2)),
        http=HTTPModes.http1,
        websockets=False,
        http1_settings=HTTP1Settings(
            header_read_timeout=max(1, min(header_timeout_ms, _HEADER_TIMEOUT_MAX_MS)),
            keep_alive=True,
            # The request line and headers together: 431 beyond (granian's least is 8 KiB).
            max_buffer_size=max(8192, int(_number("REQUEST_HEADERS_MAX_BYTES", 65536))),
        ),
        log_dictconfig=_log_config(),
        log_level=os.environ.get("GRANIAN_LOG_LEVEL", "info"),  # type: ignore[arg-type]
        log_access=False,  # the service writes its own access line (core.access)
        respawn_failed_workers=True,
        workers_lifetime=lifetime if lifetime >= 60 else None,
        workers_max_rss=max_rss or None,
        workers_kill_timeout=int(_number("WEB_GRACEFUL_TIMEOUT", GRACEFUL_TIMEOUT_DEFAULT)),
    )
    server.serve()


def gunicorn_serve() -> None:
    # The configuration prepares the metrics folder itself; gunicorn replaces this process.
    argv = ["gunicorn", "--config", "python:classifier_site.gunicorn", "classifier_site.wsgi"]
    os.execv(sys.executable, [sys.executable, "-m", *argv])  # noqa: S606 (no shell: argv as is)


def main() -> None:
    server = os.environ.get("WEB_SERVER", "granian").strip().lower()
    if server == "gunicorn":
        gunicorn_serve()
    if server != "granian":
        sys.exit(f"WEB_SERVER must be granian or gunicorn, not {server!r}")
    # Web connections give up on a lock or a statement instead of holding a request thread
    # for as long as a migration or a long report query holds the table; set before any
    # worker reads the settings, so that management commands keep no limit.
    os.environ.setdefault("DATABASE_STATEMENT_TIMEOUT", "10")
    os.environ.setdefault("DATABASE_LOCK_TIMEOUT", "2")
    folder, created = metrics_folder_prepare()
    _cache_announce()
    try:
        granian_serve()
    finally:
        if created:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
