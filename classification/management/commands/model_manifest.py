from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classification.exceptions import ModelRegistrationError
from classification.registry.manifest import manifest_export, manifest_import


class Command(BaseCommand):
    help = (
        "Export the model registry to a JSON manifest, or import one: model names the registry "
        "lacks are created from it (their artifacts must be in MODEL_STORE). The Docker image "
        "exports at build time and imports at start."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["export", "import"])
        parser.add_argument("path", type=Path)

    def handle(self, *args: object, action: str, path: Path, **options: object) -> None:
        if action == "export":
            count = manifest_export(path=path)
            self.stdout.write(f"Wrote {count} model versions to {path}.")
            return
        try:
            created = manifest_import(path=path)
        except ModelRegistrationError as exc:  # an artifact missing or changed, too
            raise CommandError(str(exc)) from exc
        if created:
            self.stdout.write(self.style.SUCCESS(f"Registered from {path}: {', '.join(created)}."))
        else:
            self.stdout.write(f"Every model in {path} is already registered.")
