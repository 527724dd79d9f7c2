"""Prometheus metrics of classification: stages, cache, models and answers.

Defined on the site's registry (core.metrics), so both the single-process and the
multiprocess exposition include them.
"""

from collections.abc import Iterator

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from classification.models import ModelVersion
from classification.results import ClassificationResult
from core.failures import FailureCounter
from core.metrics import REGISTRY, labelled

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


def classification_observe(result: ClassificationResult) -> None:
    """Stage timings, top-1 label and confidence of one answer."""
    for stage, seconds in result.timings.items():
        labelled(STAGE_SECONDS, stage).observe(seconds)
    if result.predictions:
        top = result.predictions[0]
        labelled(PREDICTIONS, result.model_name, top.label).inc()
        labelled(CONFIDENCE, result.model_name).observe(top.confidence)


registry_failures = FailureCounter("Reading the model registry for /metrics")


class ProductionModelCollector:
    """``classifier_production_model{model, version} 1`` for each name's production version.

    Read from the registry at scrape time (one small query), so it says what the registry
    promotes; ``classifier_model_served`` says what the workers actually serve.
    """

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "classifier_production_model",
            "The production version of each model name in the registry (always 1).",
            labels=["model", "version"],
        )

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        try:
            rows = list(
                ModelVersion.objects.filter(stage=ModelVersion.Stage.PRODUCTION).values_list(
                    "name", "version"
                )
            )
        except Exception as exc:  # a scrape must answer even when the database does not
            registry_failures.failed(exc)
            return
        registry_failures.recovered()
        for name, version in rows:
            family.add_metric([name, str(version)], 1)
        yield family
