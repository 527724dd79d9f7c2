from django.apps import AppConfig


class GroundTruthConfig(AppConfig):
    """What users say the right answer was: feedback, live accuracy per model version, shadow
    evaluation of staging versions on live traffic, and feedback exported as training data."""

    name = "ground_truth"
    verbose_name = "Ground truth"

    def ready(self) -> None:
        from classification.signals import classify_request_answered
        from core.lifecycle import worker_exit_hook_register, worker_start_hook_register
        from core.metrics import scrape_collector_register
        from core.openapi import schema_exactly_one_of_register
        from ground_truth import statistics_admin  # noqa: F401 (registers the statistics page)
        from ground_truth.metrics import ground_truth_collector
        from ground_truth.shadowing import (
            shadow_evaluator_start,
            shadow_evaluator_stop,
            shadow_on_answer,
        )

        scrape_collector_register(ground_truth_collector)
        # The answer is named by its request id or by its image (with the model's name): the
        # serializer checks it in code, which the schema cannot see.
        for component in ("GiveFeedbackRequest", "GiveFeedbackJsonRequest"):
            schema_exactly_one_of_register(
                component=component, fields=["request_id", "image_sha256"]
            )
        worker_start_hook_register(shadow_evaluator_start)
        worker_exit_hook_register(shadow_evaluator_stop)
        classify_request_answered.connect(shadow_on_answer, dispatch_uid="ground_truth.shadow")
