"""The ASGI application ``classifier_site.serve`` runs under granian: Django behind core.front.

Django itself stays synchronous (classifier_site.wsgi, which gunicorn serves as it is); the
front reads each request's body on the event loop and runs Django in WEB_THREADS threads.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "classifier_site.settings")

from django.conf import settings

from classifier_site.wsgi import application as wsgi_application
from core import worker
from core.front import AsyncFront


def _worker_start() -> None:
    worker.malloc_tune()
    worker.worker_ready()


def _worker_stop() -> None:
    worker.worker_done()
    worker.metrics_mark_dead(os.getpid())


application = AsyncFront(
    wsgi_application,
    threads=settings.WEB_THREADS,
    body_timeout=settings.REQUEST_BODY_TIMEOUT,
    max_body=settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
    on_start=_worker_start,
    on_stop=_worker_stop,
)
