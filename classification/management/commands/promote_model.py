from django.core.management.base import BaseCommand, CommandError, CommandParser

from classification.selectors import model_version_get
from classification.services import model_version_promote


class Command(BaseCommand):
    help = "Put a registered model version in production; running workers switch within seconds."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("version", type=int)

    def handle(self, *args: object, name: str, version: int, **options: object) -> None:
        model_version = model_version_get(name=name, version=version)
        if model_version is None:
            raise CommandError(f"No version {version} of {name!r} is registered.")
        model_version_promote(model_version=model_version)
        self.stdout.write(self.style.SUCCESS(f"{name} v{version} is in production."))
