import tempfile
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classification.exceptions import ModelRegistrationError
from classification.models import ModelVersion
from classification.registry.services import model_version_register
from classification.registry.sources import (
    ModelSource,
    birds,
    dog_breeds,
    efficientnet_lite,
    keras_imagenet,
)
from classification.selectors import model_default_name, model_name_exists

MODELS = {
    "dog-breeds": "MobileNetV2 dog breeds (19 classes, 160 x 160), works offline",
    "imagenet": "Keras MobileNetV2 with ImageNet weights (1000 classes, 224 x 224), downloads",
    "imagenet-lite0": "EfficientNet-Lite0, ImageNet (1000 classes, 224 x 224), works offline",
    "mobilenet": "Keras MobileNet v1 with ImageNet weights (1000 classes, 224 x 224), downloads",
    "birds": "TF Hub AIY birds V1 (964 species and background, 224 x 224), downloads",
    "tiny-clip": "a tiny CLIP trained here on coloured squares (zero-shot, 32 x 32), works offline",
}


class Command(BaseCommand):
    help = "Fetch a known model, register it and (by default) put it in production."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model", choices=sorted(MODELS))
        parser.add_argument("--stage", choices=ModelVersion.Stage.values, default="production")
        parser.add_argument(
            "--if-no-production",
            action="store_true",
            help="Do nothing when some model is already in production (used by 'make run').",
        )
        parser.add_argument(
            "--if-missing",
            action="store_true",
            help="Do nothing when a model of this name is registered (used by 'make run').",
        )
        parser.add_argument(
            "--accept-unverified",
            action="store_true",
            help="Models that download: download even when no SHA-256 is configured, and "
            "record the one found.",
        )

    def handle(self, *args: object, model: str, **options: object) -> None:
        if options["if_no_production"] and model_default_name() is not None:
            self.stdout.write(f"A model is already in production ({model_default_name()}).")
            return
        if options["if_missing"] and model_name_exists(name=model):
            self.stdout.write(f"{model} is already registered.")
            return
        self.stdout.write(f"Fetching {model}: {MODELS[model]} ...")
        if model == "tiny-clip":
            self._tiny_clip(stage=str(options["stage"]))
            return
        try:
            with tempfile.TemporaryDirectory() as workdir:
                source = _source(
                    model,
                    workdir=Path(workdir),
                    accept_unverified=bool(options["accept_unverified"]),
                )
                model_version = model_version_register(
                    artifact_path=source.artifact_path,
                    name=model,
                    labels=source.labels,
                    input_size=source.input_size,
                    stage=str(options["stage"]),
                    source=source.source,
                    preprocessing=source.preprocessing,
                )
        except ModelRegistrationError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"Registered {model_version}."))

    def _tiny_clip(self, *, stage: str) -> None:
        # Imported here: KerasHub and TensorFlow are needed by zero-shot registrations only.
        from classification.registry.sources.tiny_clip import TINY_CLIP_LABELS, tiny_clip_register

        try:
            model_version = tiny_clip_register(name="tiny-clip", stage=stage)
        except ModelRegistrationError as exc:
            raise CommandError(str(exc)) from exc
        labels = ", ".join(TINY_CLIP_LABELS)
        self.stdout.write(
            self.style.SUCCESS(f"Registered {model_version} (zero-shot; its labels: {labels}).")
        )


def _source(model: str, *, workdir: Path, accept_unverified: bool) -> ModelSource:
    if model == "dog-breeds":
        return dog_breeds.dog_breeds_source(workdir=workdir)
    if model == "imagenet-lite0":
        return efficientnet_lite.efficientnet_lite0_source(workdir=workdir)
    if model == "birds":
        return birds.birds_source(workdir=workdir, accept_unverified=accept_unverified)
    if model == "mobilenet":
        return keras_imagenet.mobilenet_source(workdir=workdir, accept_unverified=accept_unverified)
    return keras_imagenet.imagenet_source(workdir=workdir, accept_unverified=accept_unverified)
