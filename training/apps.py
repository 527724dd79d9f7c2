from django.apps import AppConfig


class TrainingConfig(AppConfig):
    """Training, evaluating and batch-predicting the garment listing model (offline jobs).

    It uses classification (its preprocessing, registry and store); classification never
    imports it, so serving carries no training code.
    """

    default_auto_field = "django.db.models.BigAutoField"
    name = "training"
