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
