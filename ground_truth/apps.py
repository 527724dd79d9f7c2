from django.apps import AppConfig


class GroundTruthConfig(AppConfig):
    """What users say the right answer was: feedback, live accuracy per model version, shadow
    evaluation of staging versions on live traffic, and feedback exported as training data."""

    name = "ground_truth"
    verbose_name = "Ground truth"

    def ready(self) -> None:
        from classification.signals import classify_request_answered
        from core.lifecycle import worker_exit_hook_register, worker_start_hook_register
        from ground_truth import metrics  # noqa: F401 (registers the metrics)
        from ground_truth.shadowing import (
            shadow_evaluator_start,
            shadow_evaluator_stop,
            shadow_on_answer,
        )

        worker_start_hook_register(shadow_evaluator_start)
        worker_exit_hook_register(shadow_evaluator_stop)
        classify_request_answered.connect(shadow_on_answer, dispatch_uid="ground_truth.shadow")
