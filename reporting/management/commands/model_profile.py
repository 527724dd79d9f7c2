from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classification.registry.services import model_version_reference_profile_set
from classification.selectors import model_version_get
from reporting.management.commands._profiles import profile_from_images_or_fail
from reporting.monitoring.services import reference_profile_from_requests


class Command(BaseCommand):
    help = (
        "Store the reference profile of a model version (what model monitoring compares recent "
        "traffic with): from a folder of reference images, or from its first production answers."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("version", type=int)
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--images", type=Path, help="A folder of reference images.")
        source.add_argument(
            "--from-requests",
            type=int,
            metavar="N",
            help="Its first N answers after promotion (replaces any profile it has).",
        )

    def handle(
        self,
        *args: object,
        name: str,
        version: int,
        images: Path | None,
        from_requests: int | None,
        **options: object,
    ) -> None:
        model_version = model_version_get(name=name, version=version)
        if model_version is None:
            raise CommandError(f"No version {version} of {name!r} is registered.")
        profile: dict | None  # None: too few answers yet
        if images is not None:
            profile = profile_from_images_or_fail(
                self, model_version=model_version, images_dir=images
            )
        else:
            assert from_requests is not None
            if from_requests < 1:
                raise CommandError("--from-requests needs a positive number of answers.")
            model_version_reference_profile_set(model_version=model_version, profile=None)
            profile = reference_profile_from_requests(
                model_version=model_version, requests=from_requests
            )
            if profile is None:
                raise CommandError(
                    f"{name} v{version} has fewer than {from_requests} answers since its "
                    "promotion; it will build its profile itself once it has "
                    "MONITORING_REFERENCE_REQUESTS of them."
                )
        self.stdout.write(
            self.style.SUCCESS(
                f"{name} v{version}: reference profile of {profile['count']} answers "
                f"({profile['description']})."
            )
        )
