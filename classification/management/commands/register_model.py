import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classification.exceptions import ModelRegistrationError
from classification.models import ModelVersion
from classification.registry.services import model_version_register


def read_labels(path: Path) -> list[str]:
    """Labels from a JSON list or a text file with one label per line."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        labels = json.loads(text)
        if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
            raise CommandError(f"{path} must hold a JSON list of strings.")
        return labels
    return [line.strip() for line in text.splitlines() if line.strip()]


class Command(BaseCommand):
    help = (
        "Register a Keras (.keras/.h5), SavedModel or .tflite classifier: copy it into the model "
        "store, convert it to LiteRT and check that LiteRT agrees with TensorFlow."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path)
        parser.add_argument("--name", required=True)
        parser.add_argument("--labels", required=True, type=Path, help="JSON list or one per line")
        parser.add_argument("--input-size", type=int, default=None)
        parser.add_argument("--stage", choices=ModelVersion.Stage.values, default="staging")
        parser.add_argument("--source", default="", help="Where the weights came from.")
        parser.add_argument("--resample", choices=["nearest", "bilinear", "bicubic", "lanczos"])

    def handle(self, *args: object, **options: object) -> None:
        labels = read_labels(options["labels"])  # type: ignore[arg-type]
        preprocessing = {"resample": options["resample"]} if options["resample"] else None
        try:
            model_version = model_version_register(
                artifact_path=options["path"],  # type: ignore[arg-type]
                name=options["name"],  # type: ignore[arg-type]
                labels=labels,
                input_size=options["input_size"],  # type: ignore[arg-type]
                stage=options["stage"],  # type: ignore[arg-type]
                source=options["source"],  # type: ignore[arg-type]
                preprocessing=preprocessing,
            )
        except ModelRegistrationError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"Registered {model_version}; LiteRT-TensorFlow difference "
                f"{model_version.metrics['parity_max_abs_diff']}"
            )
        )
