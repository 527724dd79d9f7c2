"""Prometheus metrics of the service, and the text that GET /metrics answers.

Under gunicorn, classifier_site/gunicorn.py sets PROMETHEUS_MULTIPROC_DIR before any worker
starts, so prometheus-client keeps every worker's values in files there and a scrape adds them
up across workers (multiprocess mode). Without that variable (tests, runserver, management
commands) the values live in this process only.

Adding metrics (for other apps, e.g. model monitoring):
- Counters and histograms: define them here with ``registry=REGISTRY`` and a ``classifier_``
  name; nothing else is needed, both modes add them up.
- Gauges set by workers: choose a ``multiprocess_mode`` ("livemax", "livesum",
  "livemostrecent", ...); a plain gauge in multiprocess mode shows one series per worker pid.
- Figures computed when scraped (from the database, say): write a collector (an object with a
  ``collect()`` that yields metric families) and pass it to ``scrape_collector_register``; it
  runs in the worker that answers the scrape, in both modes.
"""

import os
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import Metric

if TYPE_CHECKING:
    from classification.serving.results import ClassificationResult

CONTENT_TYPE = CONTENT_TYPE_LATEST
# No '_created' series: multiprocess mode has none either, so both modes expose the same names.
disable_created_metrics()


class Collector(Protocol):
    def collect(self) -> Iterable[Metric]: ...


# The registry of this process's metrics (used for the exposition in single-process mode).
REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_STAGE_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

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

# --- Classification -----------------------------------------------------------------------
STAGES = ("cache_lookup", "fetch", "decode", "preprocess", "inference", "log_write")
STAGE_SECONDS = Histogram(
    "classifier_stage_duration_seconds",
    "Time spent in each stage of POST /classify-image.",
    ["stage"],
    buckets=_STAGE_BUCKETS,
    registry=REGISTRY,
)
CACHE_LOOKUPS = Counter(
    "classifier_cache_lookups",
    "Result cache lookups, by key kind (url, image) and result (hit, miss).",
    ["kind", "result"],
    registry=REGISTRY,
)
PREDICTIONS = Counter(
    "classifier_predictions",
    "Answers given (cached ones included), by model name and top-1 label.",
    ["model", "label"],
    registry=REGISTRY,
)
CONFIDENCE = Histogram(
    "classifier_prediction_confidence",
    "Top-1 confidence of the answers given (cached ones included), by model name.",
    ["model"],
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
    registry=REGISTRY,
)
INFERENCE_BATCH_SIZE = Histogram(
    "classifier_inference_batch_size",
    "Images per inference call, by model name.",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64),
    registry=REGISTRY,
)
MODEL_LOAD_SECONDS = Histogram(
    "classifier_model_load_seconds",
    "Time to load, verify and warm up a model version in a worker, by model name.",
    ["model"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    registry=REGISTRY,
)
MODEL_LOAD_FAILURES = Counter(
    "classifier_model_load_failures",
    "Model versions a worker could not load, by model name.",
    ["model"],
    registry=REGISTRY,
)
# 1 for the version a live worker serves, 0 for one it served before; the highest over the
# live workers, so a version any worker still serves shows 1.
MODEL_SERVED = Gauge(
    "classifier_model_served",
    "Model versions served by live workers (1) or served before and replaced (0).",
    ["model", "version"],
    multiprocess_mode="livemax",
    registry=REGISTRY,
)

# --- Request log and Elasticsearch export --------------------------------------------------
EXPORT_SENT = Counter(
    "classifier_elasticsearch_documents_sent",
    "Documents Elasticsearch accepted, by index.",
    ["index"],
    registry=REGISTRY,
)
EXPORT_DROPPED = Counter(
    "classifier_elasticsearch_documents_dropped",
    "Documents Elasticsearch refused for good (kept in the database, not sent again), by index.",
    ["index"],
    registry=REGISTRY,
)
EXPORT_FAILURES = Counter(
    "classifier_elasticsearch_export_failures",
    "Export rounds that failed (Elasticsearch unreachable, slow or erroring).",
    registry=REGISTRY,
)
REQUEST_LOG_FAILURES = Counter(
    "classifier_request_log_failures",
    "Request log rows that could not be written.",
    registry=REGISTRY,
)


def request_observe(*, endpoint: str, method: str, status: int, seconds: float) -> None:
    labels = (endpoint, method, str(status))
    REQUESTS.labels(*labels).inc()
    REQUEST_SECONDS.labels(*labels).observe(seconds)


def classification_observe(result: "ClassificationResult") -> None:
    """Stage timings, top-1 label and confidence of one answer."""
    for stage, seconds in result.timings.items():
        STAGE_SECONDS.labels(stage).observe(seconds)
    if result.predictions:
        top = result.predictions[0]
        PREDICTIONS.labels(result.model_name, top.label).inc()
        CONFIDENCE.labels(result.model_name).observe(top.confidence)


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


def samples_sum(text: str, name: str, labels: dict[str, Any] | None = None) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels`` (0.0: none)."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted = {key: str(value) for key, value in (labels or {}).items()}
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in wanted.items()):
                total += sample.value
    return total
