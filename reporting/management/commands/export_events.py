import contextlib
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from elasticsearch import ApiError, TransportError

from core.liveness_server import liveness_server_start
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
            self._follow()
            return
        try:
            exported = sender.run_once()
        except (ApiError, TransportError) as exc:
            raise CommandError(f"Elasticsearch refused or did not answer: {exc}") from exc
        backlog = outbox_backlog()
        self.stdout.write(f"Exported {exported} document(s); still waiting: {backlog}")

    def _follow(self) -> None:
        """Send until SIGTERM or Ctrl-C, retrying with back-off while Elasticsearch is away
        (the index templates too), and answer GET /health/live meanwhile."""
        host, port = settings.EXPORT_HEALTH_HOST, settings.EXPORT_HEALTH_PORT
        try:
            health = liveness_server_start(host=host, port=port, liveness=sender.liveness)
        except OSError as exc:
            raise CommandError(f"Cannot serve /health/live on {host}:{port}: {exc}") from exc
        signal.signal(signal.SIGTERM, lambda *_: sender.request_stop())
        self.stdout.write(
            f"Sending to Elasticsearch until stopped (Ctrl-C); liveness at "
            f"http://{host}:{health.server_address[1]}/health/live"
        )
        try:
            with contextlib.suppress(KeyboardInterrupt):
                sender.run_forever()
        finally:
            health.shutdown()
            health.server_close()
