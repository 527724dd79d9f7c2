from django.apps import AppConfig


class ReportingConfig(AppConfig):
    """Request log, /report, the Elasticsearch export and admin statistics (issue 5)."""

    name = "reporting"
