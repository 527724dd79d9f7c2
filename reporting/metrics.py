"""Prometheus metrics of the request log and the Elasticsearch export (the outbox's backlog gauge
is counted at scrape time: ``reporting.outbox``)."""

from prometheus_client import Counter, Gauge

from core.metrics import REGISTRY

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
EXPORT_RETRY_SECONDS = Gauge(
    "classifier_elasticsearch_export_retry_seconds",
    "Seconds the sender waits before its next try after a failed round (0: not failing).",
    multiprocess_mode="livemax",
    registry=REGISTRY,
)
REQUEST_LOG_FAILURES = Counter(
    "classifier_request_log_failures",
    "Request log rows that could not be written.",
    registry=REGISTRY,
)

# The request-log writer (reporting/log_writer.py), per worker, adding up across workers.
REQUEST_LOG_WRITTEN = Counter(
    "classifier_request_log_written",
    "Queued request-log rows the writer thread inserted.",
    registry=REGISTRY,
)
REQUEST_LOG_DROPPED = Counter(
    "classifier_request_log_dropped",
    "Queued request-log rows lost, by reason: queue_full, refused (by the database), spill_failed.",
    ["reason"],
    registry=REGISTRY,
)
REQUEST_LOG_SPILLED = Counter(
    "classifier_request_log_spilled",
    "Request-log rows written to a spill file at worker exit (read back by the next writer).",
    registry=REGISTRY,
)
REQUEST_LOG_QUEUE_LENGTH = Gauge(
    "classifier_request_log_queue_length",
    "Request-log rows queued and not written yet, in live workers.",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
