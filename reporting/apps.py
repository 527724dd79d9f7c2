from django.apps import AppConfig


class ReportingConfig(AppConfig):
    """Request log, /report, the Elasticsearch export and admin statistics (issue 5)."""

    name = "reporting"

    def ready(self) -> None:
        from classifier_site.metrics import scrape_collector_register
        from reporting.metrics import ExportQueueCollector
        from reporting.monitoring_metrics import monitoring_collector

        scrape_collector_register(ExportQueueCollector())
        scrape_collector_register(monitoring_collector)
