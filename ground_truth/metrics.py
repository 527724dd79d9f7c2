"""Prometheus metrics of ground truth: the shadow evaluator's counters, and live accuracy from
feedback as gauges (a collector for the /metrics registry).

The figures come from the database, so every worker would report the same numbers: they are
computed when the registry is scraped, by whichever process answers (GroundTruthConfig.ready()
registers ``ground_truth_collector`` with core.metrics.scrape_collector_register), as model
monitoring's are. A worker reuses its last figures for MONITORING_METRICS_SECONDS, so frequent
scrapes cost a few aggregate queries per interval. A failure is logged (sparingly) and yields
no samples; it never fails the scrape.
"""

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from django.conf import settings
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from core.failures import FailureCounter
from core.metrics import REGISTRY
from ground_truth.selectors import (
    Proportion,
    accuracy_warned,
    feedback_accuracy,
    production_versions,
    shadowed_versions_compare,
)

# --- Shadow evaluation (ground_truth/shadowing.py) -------------------------------------------
SHADOW_PREDICTIONS = Counter(
    "classifier_shadow_predictions",
    "Shadow predictions written, by shadowed (staging) model name, version and whether its "
    "top label agreed with production's.",
    ["model", "version", "agrees"],
    registry=REGISTRY,
)
SHADOW_DROPPED = Counter(
    "classifier_shadow_dropped",
    "Sampled production answers a shadowed version did not get: the shadow queue was full, or "
    "the worker stopped with them queued.",
    ["model", "version"],
    registry=REGISTRY,
)
SHADOW_ERRORS = Counter(
    "classifier_shadow_errors",
    "Shadow predictions that failed, by version and reason (image: undecodable or refused, "
    "load: the version would not load, write: the database refused the rows).",
    ["model", "version", "reason"],
    registry=REGISTRY,
)
SHADOW_LATENCY = Histogram(
    "classifier_shadow_latency_seconds",
    "A shadowed version's decode, preprocessing and inference time per image.",
    ["model", "version"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
SHADOW_QUEUE_DEPTH = Gauge(
    "classifier_shadow_queue_depth",
    "Images queued for shadow evaluation and not answered yet, in live workers.",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)


# --- Live accuracy from feedback, computed at scrape -----------------------------------------
ground_truth_metric_failures = FailureCounter("Computing the ground truth metrics")


@dataclass(frozen=True)
class _Figures:
    # (model, version) -> accuracy from counted feedback, for production versions.
    production: dict[tuple[str, str], Proportion]
    # (model, version) -> agreement with production, for shadowed staging versions.
    shadow_agreement: dict[tuple[str, str], Proportion]


def _figures() -> _Figures:
    return _Figures(
        production={
            (version.name, str(version.version)): feedback_accuracy(model_version=version)
            for version in production_versions()
        },
        shadow_agreement={
            (item.model_version.name, str(item.model_version.version)): item.comparison.agreement
            for item in shadowed_versions_compare()
        },
    )


class GroundTruthCollector(Collector):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cached: tuple[float, _Figures] | None = None

    def figures(self) -> _Figures:
        """The current figures, recomputed at most every MONITORING_METRICS_SECONDS."""
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= settings.MONITORING_METRICS_SECONDS:
                self._cached = (now, _figures())
            return self._cached[1]

    def reset(self) -> None:
        with self._lock:
            self._cached = None

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Names only: registering the collector (at start-up) must not query the database.
        yield from ground_truth_metric_families(_Figures(production={}, shadow_agreement={}))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            figures = self.figures()
        except Exception as exc:  # a scrape must not fail because the database did
            ground_truth_metric_failures.failed(exc)
            return
        ground_truth_metric_failures.recovered()
        yield from ground_truth_metric_families(figures)


def ground_truth_metric_families(figures: _Figures) -> list[GaugeMetricFamily]:
    """The gauges of the figures (docs/observability.md)."""
    model = ["model", "version"]
    accuracy = GaugeMetricFamily(
        "classifier_feedback_accuracy",
        "Share of a production version's counted feedback (all but rejected) saying it was right.",
        labels=model,
    )
    lower = GaugeMetricFamily(
        "classifier_feedback_accuracy_lower",
        "Lower bound of the Wilson 95 % interval of classifier_feedback_accuracy.",
        labels=model,
    )
    upper = GaugeMetricFamily(
        "classifier_feedback_accuracy_upper",
        "Upper bound of the Wilson 95 % interval of classifier_feedback_accuracy.",
        labels=model,
    )
    # A gauge, not a counter: the count falls when staff reject feedback.
    total = GaugeMetricFamily(
        "classifier_feedback_total",
        "Counted feedback on a production version, by verdict (correct, incorrect).",
        labels=[*model, "verdict"],
    )
    warning = GaugeMetricFamily(
        "classifier_feedback_accuracy_warning",
        "1: at least FEEDBACK_MIN_SAMPLES counted feedback and accuracy below "
        "FEEDBACK_ACCURACY_WARNING; 0 otherwise.",
        labels=model,
    )
    agreement = GaugeMetricFamily(
        "classifier_shadow_agreement",
        "Share of a shadowed staging version's answers whose top label equals production's.",
        labels=model,
    )
    for ids, proportion in figures.production.items():
        total.add_metric([*ids, "correct"], proportion.successes)
        total.add_metric([*ids, "incorrect"], proportion.n - proportion.successes)
        warning.add_metric(list(ids), int(accuracy_warned(proportion)))
        interval = proportion.interval
        if proportion.value is not None and interval is not None:
            accuracy.add_metric(list(ids), proportion.value)
            lower.add_metric(list(ids), interval[0])
            upper.add_metric(list(ids), interval[1])
    for ids, proportion in figures.shadow_agreement.items():
        if proportion.value is not None:
            agreement.add_metric(list(ids), proportion.value)
    return [accuracy, lower, upper, total, warning, agreement]


ground_truth_collector = GroundTruthCollector()
