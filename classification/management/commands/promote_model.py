from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classification.exceptions import ModelRegistrationError
from classification.registry.services import model_version_promote
from classification.selectors import model_version_get


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
        from reporting.monitoring import ReferenceProfileError, reference_profile_from_images

        model_version = model_version_get(name=name, version=version)
        if model_version is None:
            raise CommandError(f"No version {version} of {name!r} is registered.")
        if reference_images is not None:
            try:
                profile, skipped = reference_profile_from_images(
                    model_version=model_version, images_dir=reference_images
                )
            except (ReferenceProfileError, ModelRegistrationError) as exc:
                raise CommandError(f"{exc} {name} v{version} was not promoted.") from exc
            for path in skipped:
                self.stderr.write(f"Skipped {path}: not an image the service accepts.")
            self.stdout.write(f"Reference profile: {profile['description']}.")
        model_version_promote(model_version=model_version)
        self.stdout.write(self.style.SUCCESS(f"{name} v{version} is in production."))
