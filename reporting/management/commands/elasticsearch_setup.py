from django.core.management.base import BaseCommand, CommandError
from elasticsearch import ApiError, TransportError

from reporting.elastic import index_templates_put
from reporting.management.commands._common import client_or_fail


class Command(BaseCommand):
    help = "Install the Elasticsearch index templates (mappings) and create the indices."

    def handle(self, *args: object, **options: object) -> None:
        client = client_or_fail()
        try:
            names = index_templates_put(client=client)
        except (ApiError, TransportError) as exc:
            raise CommandError(f"Elasticsearch refused or did not answer: {exc}") from exc
        self.stdout.write(f"Templates and indices ready: {', '.join(names)}")
