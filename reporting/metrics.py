"""Prometheus metrics of the request log and the Elasticsearch export."""

from collections.abc import Iterator

from django.conf import settings
from prometheus_client import Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from core.failures import FailureCounter
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
REQUEST_LOG_FAILURES = Counter(
    "classifier_request_log_failures",
    "Request log rows that could not be written.",
    registry=REGISTRY,
)

outbox_failures = FailureCounter("Counting the export outbox for /metrics")


class ExportQueueCollector:
    """``classifier_elasticsearch_queue_length{index}``: rows not exported yet.

    Counted in the database at scrape time (the outbox has a partial index on unexported rows),
    so it is right whichever worker or process does the sending. Absent when export is off.
    """

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "classifier_elasticsearch_queue_length",
            "Rows waiting to be exported to Elasticsearch, by index.",
            labels=["index"],
        )

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        if not settings.ELASTICSEARCH_URL:
            return
        from reporting.export import outbox_backlog

        try:
            backlog = outbox_backlog()
        except Exception as exc:  # a scrape must answer even when the database does not
            outbox_failures.failed(exc)
            return
        outbox_failures.recovered()
        family = self._family()
        for index, count in backlog.items():
            family.add_metric([index], count)
        yield family


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
