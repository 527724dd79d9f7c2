"""Prometheus metrics of the service, and the text that GET /metrics answers.

The server's launcher (classifier_site/serve.py, or gunicorn.py) sets PROMETHEUS_MULTIPROC_DIR
before any worker starts, so prometheus-client keeps every worker's values in files there and a
scrape adds them up across workers (multiprocess mode). Without that variable (tests,
runserver, management commands) the values live in this process only.

Each app defines its own metrics in its ``metrics.py`` and imports that module in its
``AppConfig.ready()``, so every name is known before the first scrape:
- Counters and histograms: ``registry=REGISTRY`` and a ``classifier_`` name; nothing else is
  needed, both modes add them up.
- Gauges set by workers: choose a ``multiprocess_mode`` ("livemax", "livesum",
  "livemostrecent", ...); a plain gauge in multiprocess mode shows one series per worker pid.
- Figures computed when scraped (from the database, say): write a collector (an object with a
  ``collect()`` that yields metric families) and pass it to ``scrape_collector_register`` in
  ``ready()``; it runs in the worker that answers the scrape, in both modes.
"""

import os
import threading
from collections.abc import Iterable
from typing import Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import Metric

CONTENT_TYPE = CONTENT_TYPE_LATEST
# No '_created' series: multiprocess mode has none either, so both modes expose the same names.
disable_created_metrics()


class Collector(Protocol):
    def collect(self) -> Iterable[Metric]: ...


# The registry of this process's metrics (used for the exposition in single-process mode).
REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# --- HTTP ---------------------------------------------------------------------------------
REQUESTS = Counter(
    "classifier_requests",
    "Requests answered, by route name, method and status.",
    ["endpoint", "method", "status"],
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "classifier_request_duration_seconds",
    "Server wall time of requests, by route name, method and status.",
    ["endpoint", "method", "status"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)


# Children by metric and label values: .labels() takes the metric's lock and checks its label
# values on every call (about 2 us; a request makes several). Label values are few (routes,
# statuses, stages, model names and their labels), so this stays as small as the metrics.
_children: dict[tuple[int, tuple[str, ...]], Any] = {}


def labelled(metric: Any, *values: str) -> Any:
    """``metric.labels(*values)``, looked up once per process."""
    key = (id(metric), values)  # the metrics are module globals: their ids are never reused
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    return child


def request_observe(*, endpoint: str, method: str, status: int, seconds: float) -> None:
    labels = (endpoint, method, str(status))
    labelled(REQUESTS, *labels).inc()
    labelled(REQUEST_SECONDS, *labels).observe(seconds)


# --- Exposition ---------------------------------------------------------------------------

_scrape_collectors: list[Collector] = []
_scrape_lock = threading.Lock()


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def scrape_collector_register(collector: Collector) -> None:
    """Run ``collector`` at every scrape (once per process is enough; repeats are ignored)."""
    with _scrape_lock:
        if any(existing is collector for existing in _scrape_collectors):
            return
        _scrape_collectors.append(collector)
        REGISTRY.register(collector)


def exposition() -> bytes:
    """The Prometheus text of every metric: all workers' figures in multiprocess mode."""
    directory = multiprocess_dir()
    if directory is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry(auto_describe=True)
    multiprocess.MultiProcessCollector(registry, path=directory)
    with _scrape_lock:
        collectors = list(_scrape_collectors)
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry)
