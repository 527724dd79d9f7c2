import contextlib
import signal

from django.core.management.base import BaseCommand, CommandError, CommandParser
from elasticsearch import ApiError, TransportError

from reporting.export import sender
from reporting.management.commands._common import client_or_fail
from reporting.outbox import outbox_backlog


class Command(BaseCommand):
    help = (
        "Send request log rows and /report calls not yet exported to Elasticsearch. With "
        "--follow, keep sending as they arrive (run this when ELASTICSEARCH_EXPORT_IN_WORKERS=0)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--follow", action="store_true", help="Keep running until stopped.")

    def handle(self, *args: object, follow: bool = False, **options: object) -> None:
        client_or_fail()
        if follow:
            signal.signal(signal.SIGTERM, lambda *_: sender.request_stop())
            self.stdout.write("Sending to Elasticsearch until stopped (Ctrl-C)...")
            with contextlib.suppress(KeyboardInterrupt):
                sender.run_forever()
            return
        try:
            exported = sender.run_once()
        except (ApiError, TransportError) as exc:
            raise CommandError(f"Elasticsearch refused or did not answer: {exc}") from exc
        backlog = outbox_backlog()
        self.stdout.write(f"Exported {exported} document(s); still waiting: {backlog}")
