from datetime import datetime

from django.core.management.base import BaseCommand, CommandError, CommandParser
from elasticsearch import ApiError, TransportError

from reporting.elastic import index_templates_put
from reporting.export import request_log_reexport
from reporting.management.commands._common import client_or_fail, iso_datetime


class Command(BaseCommand):
    help = (
        "Export again every request log row and /report call created in [--since, --until), "
        "whether or not it was exported before (documents are overwritten, never duplicated)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", type=iso_datetime, help="ISO 8601 start (inclusive).")
        parser.add_argument("--until", type=iso_datetime, help="ISO 8601 end (exclusive).")

    def handle(
        self,
        *args: object,
        since: datetime | None = None,
        until: datetime | None = None,
        **options: object,
    ) -> None:
        if since and until and since >= until:
            raise CommandError("--until must be after --since.")
        client = client_or_fail()
        try:
            index_templates_put(client=client)
            counts = request_log_reexport(since=since, until=until, client=client)
        except (ApiError, TransportError) as exc:
            raise CommandError(f"Elasticsearch refused or did not answer: {exc}") from exc
        for index, count in counts.items():
            self.stdout.write(f"{index}: {count} document(s) sent")
