from typing import Any

from django.core.management.base import BaseCommand

from ground_truth.services import feedback_images_expire


class Command(BaseCommand):
    help = (
        "Delete the images kept with feedback once past their expiry "
        "(FEEDBACK_IMAGE_RETENTION_DAYS after the feedback): run it daily."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        result = feedback_images_expire()
        self.stdout.write(
            f"{result.feedback} feedback image(s) expired, {result.files} file(s) deleted."
        )
