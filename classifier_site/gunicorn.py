"""gunicorn settings for 'make run': threaded workers, each loading the model once, lazily."""

import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = 20
accesslog = "-"
# Workers start without the model; it loads on the first request after each (re)start.
preload_app = False
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))


def when_ready(server) -> None:  # type: ignore[no-untyped-def]
    """Say at start which result cache the workers share (or do not share)."""
    from urllib.parse import urlsplit

    redis_url = os.environ.get("REDIS_URL", "")
    if redis_url:
        parts = urlsplit(redis_url)
        where = f"{parts.hostname}:{parts.port or 6379}{parts.path}"  # never the password
        server.log.info("Result cache and throttles: Redis at %s, shared by all workers", where)
    else:
        server.log.info("Result cache and throttles: local memory, one per worker (no REDIS_URL)")


def post_worker_init(worker) -> None:  # type: ignore[no-untyped-def]
    """Load and warm the production model as each worker starts, not on its first request.

    The runtime stays lazy and import-free; this only asks for it early. Without a model yet,
    the worker starts anyway and loads one when it is promoted.
    """
    from classification.engine import get_runtime
    from classification.exceptions import ModelNotReady, UnknownModel

    try:
        get_runtime().serving_model()
    except (ModelNotReady, UnknownModel) as exc:
        worker.log.warning("No model loaded at start: %s", exc)
    except Exception:  # a database not migrated yet, say: never stop the worker for it
        worker.log.exception("Could not load the model at start")
    finally:
        from django.db import connections

        connections.close_all()  # request threads open their own
