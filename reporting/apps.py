from django.apps import AppConfig


class ReportingConfig(AppConfig):
    """Request log, /report, the Elasticsearch export, model monitoring and admin statistics."""

    name = "reporting"

    def ready(self) -> None:
        from classification.signals import classify_request_answered
        from core.health import health_check_register
        from core.lifecycle import (
            worker_exit_hook_register,
            worker_start_hook_register,
        )
        from core.metrics import scrape_collector_register
        from reporting.health import elasticsearch_check, request_log_check
        from reporting.log_writer import request_log_writer_start, request_log_writer_stop
        from reporting.monitoring.metrics import monitoring_collector
        from reporting.outbox import ExportQueueCollector, export_sender_wake
        from reporting.request_logging import request_log_on_answer

        scrape_collector_register(ExportQueueCollector())
        scrape_collector_register(monitoring_collector)
        health_check_register("elasticsearch", elasticsearch_check)
        health_check_register("request_log", request_log_check)
        worker_start_hook_register(request_log_writer_start)
        worker_exit_hook_register(request_log_writer_stop)
        worker_start_hook_register(export_sender_wake)
        classify_request_answered.connect(
            request_log_on_answer, dispatch_uid="reporting.request_log"
        )
