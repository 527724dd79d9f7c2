"""The export outbox as the rest of the app sees it: how many rows wait (a gauge of /metrics),
and waking the sender that drains it (``reporting.export``).

Apart from ``reporting.export`` because that module loads the Elasticsearch client library
(about 36 MB and 0.4 s a worker): the request log, the report and /metrics import this one,
which loads the client only once export is on and a sender is to run.
"""

from collections.abc import Iterator

from django.conf import settings
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from core.failures import FailureCounter
from reporting.models import ExportedRecord, ReportCall, RequestLog

# Every table whose rows are exported, each to the index its model names.
OUTBOX_MODELS: tuple[type[ExportedRecord], ...] = (RequestLog, ReportCall)

backlog_failures = FailureCounter("Counting the export outbox for /metrics")


def outbox_backlog() -> dict[str, int]:
    """Rows not exported yet, by index name (counted with the outbox's partial index)."""
    return {
        model.export_index(): model._default_manager.filter(exported_at__isnull=True).count()
        for model in OUTBOX_MODELS
    }


def export_sender_wake() -> None:
    """Start this process's Elasticsearch sender thread if export is on (cheap when it runs)."""
    if not (settings.ELASTICSEARCH_URL and settings.ELASTICSEARCH_EXPORT_IN_WORKERS):
        return  # export off: the Elasticsearch client is never even imported
    # Imported here: the Elasticsearch client library loads only once export is on.
    from reporting.export import sender_ensure_started

    sender_ensure_started()


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
        try:
            backlog = outbox_backlog()
        except Exception as exc:  # a scrape must answer even when the database does not
            backlog_failures.failed(exc)
            return
        backlog_failures.recovered()
        family = self._family()
        for index, count in backlog.items():
            family.add_metric([index], count)
        yield family
