from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ground_truth.exceptions import RequestNotFound
from ground_truth.services import request_forget


class Command(BaseCommand):
    help = (
        "Forget requests for the person who sent them: their feedback, kept images and shadow "
        "answers are deleted, and their log rows lose the image URL, image hash, client hash "
        "and user (and are exported again)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("request_ids", nargs="+", metavar="REQUEST_ID")

    def handle(self, *args: Any, request_ids: list[str], **options: Any) -> None:
        missing = []
        for request_id in request_ids:
            try:
                result = request_forget(request_id=request_id)
            except RequestNotFound:
                missing.append(request_id)
                self.stderr.write(f"{request_id}: no such request")
                continue
            self.stdout.write(
                f"{request_id}: forgotten ({result.feedback} feedback, {result.files} image "
                f"file(s), {result.shadow_predictions} shadow prediction(s) deleted)"
            )
        if missing:
            raise CommandError(f"{len(missing)} request id(s) not found.")
