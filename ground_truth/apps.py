from django.apps import AppConfig


class GroundTruthConfig(AppConfig):
    """What users say the right answer was: feedback, live accuracy per model version, shadow
    evaluation of staging versions on live traffic, and feedback exported as training data."""

    name = "ground_truth"
    verbose_name = "Ground truth"

    def ready(self) -> None:
        from core.metrics import scrape_collector_register
        from ground_truth import statistics_admin  # noqa: F401 (registers the statistics page)
        from ground_truth.metrics import ground_truth_collector

        scrape_collector_register(ground_truth_collector)
