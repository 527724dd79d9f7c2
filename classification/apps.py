from django.apps import AppConfig


class ClassificationConfig(AppConfig):
    name = "classification"
    verbose_name = "Classification"

    def ready(self) -> None:
        from classification.metrics import ProductionModelCollector
        from classifier_site.metrics import scrape_collector_register

        scrape_collector_register(ProductionModelCollector())
