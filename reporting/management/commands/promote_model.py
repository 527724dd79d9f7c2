from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classification.registry.services import model_version_promote
from classification.selectors import model_version_get
from reporting.management.commands._profiles import profile_from_images_or_fail


# It lives in reporting, not beside the registry it writes to, because --reference-images
# builds a model-monitoring profile: reporting may use classification, never the reverse.
class Command(BaseCommand):
    help = "Put a registered model version in production; running workers switch within seconds."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("version", type=int)
        parser.add_argument(
            "--reference-images",
            type=Path,
            help=(
                "A folder of reference images: their answers become the version's reference "
                "profile for model monitoring (before it is promoted). Without it, a version "
                "with no profile takes its first MONITORING_REFERENCE_REQUESTS answers."
            ),
        )

    def handle(
        self,
        *args: object,
        name: str,
        version: int,
        reference_images: Path | None,
        **options: object,
    ) -> None:
        model_version = model_version_get(name=name, version=version)
        if model_version is None:
            raise CommandError(f"No version {version} of {name!r} is registered.")
        if reference_images is not None:
            profile = profile_from_images_or_fail(
                self,
                model_version=model_version,
                images_dir=reference_images,
                failure_note=f" {name} v{version} was not promoted.",
            )
            self.stdout.write(f"Reference profile: {profile['description']}.")
        model_version_promote(model_version=model_version)
        self.stdout.write(self.style.SUCCESS(f"{name} v{version} is in production."))
