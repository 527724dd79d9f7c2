"""Figures about the model registry, computed when /metrics is scraped."""

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from classification.models import ModelVersion
from reporting.services import FailureCounter

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
