from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from classification.exceptions import ModelRegistrationError
from classification.models import ModelVersion
from reporting.monitoring.services import ReferenceProfileError, reference_profile_from_images


def profile_from_images_or_fail(
    command: BaseCommand, *, model_version: ModelVersion, images_dir: Path, failure_note: str = ""
) -> dict:
    """The reference profile built from ``images_dir`` (skipped files reported on stderr)."""
    try:
        profile, skipped = reference_profile_from_images(
            model_version=model_version, images_dir=images_dir
        )
    except (ReferenceProfileError, ModelRegistrationError) as exc:
        raise CommandError(f"{exc}{failure_note}") from exc
    for path in skipped:
        command.stderr.write(f"Skipped {path}: not an image the service accepts.")
    return profile
