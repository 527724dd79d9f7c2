from django.apps import AppConfig


class ClassificationConfig(AppConfig):
    name = "classification"
    verbose_name = "Classification"

    def ready(self) -> None:
        # Imported here: Django imports apps.py before the app registry (and models) is ready.
        from classification.health import fetch_capacity_check, model_check, redis_check
        from classification.metrics import ProductionModelCollector
        from core.health import health_check_register
        from core.lifecycle import worker_start_hook_register
        from core.metrics import scrape_collector_register
        from core.openapi import schema_exactly_one_of_register

        scrape_collector_register(ProductionModelCollector())
        # The request's image: exactly one of the three (the serializer checks it in code).
        schema_exactly_one_of_register(
            component="ClassifyImageRequestRequest", fields=["image_url", "image", "image_base64"]
        )
        schema_exactly_one_of_register(
            component="ClassifyImageJsonRequestRequest", fields=["image_url", "image_base64"]
        )
        health_check_register("model", model_check)
        health_check_register("redis", redis_check)
        health_check_register("fetch_capacity", fetch_capacity_check)
        worker_start_hook_register(serving_model_warm)


def serving_model_warm() -> None:
    """Load and warm up the default production model (raises ModelNotReady without one)."""
    # Imported here: Django imports apps.py before the models the engine imports are ready.
    from classification.serving.engine import get_runtime

    get_runtime().serving_model()
