import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classification.exceptions import ModelRegistrationError
from classification.models import ModelVersion
from classification.registry.clip import DEFAULT_TEMPLATE, cifar100_labels, zero_shot_register
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
        "store, convert it to LiteRT and check that LiteRT agrees with TensorFlow. With "
        "--kind zero-shot, PATH is a KerasHub CLIP preset (a local folder, or a preset name "
        "downloaded from KerasHub's hub when online)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path)
        parser.add_argument("--name", required=True)
        parser.add_argument(
            "--labels",
            required=True,
            type=Path,
            help="JSON list or one per line; 'cifar100' for the 100 CIFAR-100 class names",
        )
        parser.add_argument("--kind", choices=["classifier", "zero-shot"], default="classifier")
        parser.add_argument(
            "--template",
            default=None,
            help="zero-shot: the prompt of each label, '{}' marking it (default 'a photo of a {}')",
        )
        parser.add_argument("--input-size", type=int, default=None)
        parser.add_argument("--stage", choices=ModelVersion.Stage.values, default="staging")
        parser.add_argument("--source", default="", help="Where the weights came from.")
        parser.add_argument("--resample", choices=["nearest", "bilinear", "bicubic", "lanczos"])

    def handle(self, *args: object, **options: object) -> None:
        if options["kind"] == "zero-shot":
            self._zero_shot(options)
            return
        if options["template"] is not None:
            raise CommandError("--template is for --kind zero-shot.")
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

    def _zero_shot(self, options: dict) -> None:
        if options["input_size"] is not None or options["resample"]:
            raise CommandError("A zero-shot model's input size and preprocessing are CLIP's own.")
        labels_path: Path = options["labels"]
        labels = cifar100_labels() if str(labels_path) == "cifar100" else read_labels(labels_path)
        try:
            model_version = zero_shot_register(
                preset=str(options["path"]),
                name=options["name"],
                labels=labels,
                template=options["template"] or DEFAULT_TEMPLATE,
                stage=options["stage"],
                source=options["source"],
            )
        except ModelRegistrationError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"Registered {model_version} (zero-shot, {len(labels)} labels); LiteRT-Keras "
                f"difference {model_version.metrics['parity_max_abs_diff']:.2e} (image), "
                f"{model_version.metrics['text_parity_max_abs_diff']:.2e} (text)"
            )
        )
