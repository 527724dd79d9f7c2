from datetime import UTC, datetime

from django.core.management.base import CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from elasticsearch import Elasticsearch

from reporting.elastic import elasticsearch_client


def client_or_fail() -> Elasticsearch:
    client = elasticsearch_client()
    if client is None:
        raise CommandError("ELASTICSEARCH_URL is not set: there is nowhere to export to.")
    return client


def iso_datetime(value: str) -> datetime:
    """argparse type: an ISO 8601 time; naive times are taken as UTC."""
    parsed = parse_datetime(value)
    if parsed is None:
        raise ValueError(value)
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, UTC)
