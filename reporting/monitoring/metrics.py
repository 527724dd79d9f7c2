"""Model monitoring figures as Prometheus metrics: a custom collector for the /metrics registry.

The figures come from the database (the request log and the registry), so every worker would
report the same numbers: they are computed when the registry is scraped, by whichever process
answers, and need no multiprocess files. ReportingConfig.ready() registers the process-wide
``monitoring_collector`` with core.metrics.scrape_collector_register, so /metrics
serves it in both single-process and multiprocess mode.

A worker reuses its last comparison for MONITORING_METRICS_SECONDS, so frequent scrapes cost
at most a few aggregate queries per interval. A failure is logged (sparingly) and yields no
samples; it never fails the scrape.
"""

import threading
import time
from collections.abc import Iterator

from django.conf import settings
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from core.failures import FailureCounter
from reporting.monitoring.selectors import DISTRIBUTIONS, ModelDrift
from reporting.monitoring.services import model_monitoring_refresh

monitoring_metric_failures = FailureCounter("Computing the model monitoring metrics")


class ModelMonitoringCollector(Collector):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cached: tuple[float, list[ModelDrift]] | None = None

    def drifts(self) -> list[ModelDrift]:
        """The current comparison, recomputed at most every MONITORING_METRICS_SECONDS."""
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= settings.MONITORING_METRICS_SECONDS:
                self._cached = (now, model_monitoring_refresh())
            return self._cached[1]

    def reset(self) -> None:
        with self._lock:
            self._cached = None

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Names only: registering the collector (at start-up) must not query the database.
        yield from monitoring_metric_families([])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            drifts = self.drifts()
        except Exception as exc:  # a scrape must not fail because the database did
            monitoring_metric_failures.failed(exc)
            return
        monitoring_metric_failures.recovered()
        yield from monitoring_metric_families(drifts)


def monitoring_metric_families(drifts: list[ModelDrift]) -> list[GaugeMetricFamily]:
    """The gauges of a comparison (docs/monitoring.md)."""
    model = ["model", "version"]
    psi = GaugeMetricFamily(
        "classifier_model_drift_psi",
        "Population stability index of recent answers against the version's reference profile.",
        labels=[*model, "distribution"],
    )
    low = GaugeMetricFamily(
        "classifier_model_low_confidence_share",
        "Share of answers whose top-1 confidence is below MONITORING_LOW_CONFIDENCE.",
        labels=[*model, "population"],
    )
    answers = GaugeMetricFamily(
        "classifier_model_monitoring_answers",
        "Answers in the monitoring window, and in the reference profile.",
        labels=[*model, "population"],
    )
    tag_rate = GaugeMetricFamily(
        "classifier_model_tag_rate",
        "Share of a multi-task version's answers with the tag present, recent and in the "
        "reference profile.",
        labels=[*model, "tag", "population"],
    )
    tag_psi = GaugeMetricFamily(
        "classifier_model_tag_drift_psi",
        "Population stability index of a tag's rate (present / absent) against the reference.",
        labels=[*model, "tag"],
    )
    level = GaugeMetricFamily(
        "classifier_model_drift_alert_level",
        "0: no threshold crossed (or too little to judge), 1: notice, 2: warning.",
        labels=model,
    )
    for drift in drifts:
        ids = [drift.model_name, str(drift.model_version)]
        for name in DISTRIBUTIONS:
            value = drift.psi.get(name)
            if value is not None:
                psi.add_metric([*ids, name], value)
        for population, share in (
            ("recent", drift.recent_low_confidence_share),
            ("reference", drift.reference_low_confidence_share),
        ):
            if share is not None:
                low.add_metric([*ids, population], share)
        answers.add_metric([*ids, "recent"], drift.recent_count)
        if drift.reference:
            answers.add_metric([*ids, "reference"], drift.reference.get("count", 0))
        for tag, reference_rate, recent_rate, value in drift.tag_rows():
            for population, rate in (("recent", recent_rate), ("reference", reference_rate)):
                if rate is not None:
                    tag_rate.add_metric([*ids, tag, population], rate)
            if value is not None:
                tag_psi.add_metric([*ids, tag], value)
        level.add_metric(ids, drift.alert_level)
    return [psi, low, answers, tag_rate, tag_psi, level]


monitoring_collector = ModelMonitoringCollector()
