from django.apps import AppConfig


class GroundTruthConfig(AppConfig):
    """What users say the right answer was: feedback, live accuracy per model version, shadow
    evaluation of staging versions on live traffic, and feedback exported as training data."""

    name = "ground_truth"
    verbose_name = "Ground truth"
