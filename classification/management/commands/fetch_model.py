import tempfile
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper

from classification.exceptions import ModelRegistrationError
from classification.management.commands.register_model import read_labels
from classification.models import ModelVersion
from classification.registry.pipeline import preprocessing_with_defaults
from classification.registry.services import model_version_register
from classification.registry.sources import (
    ModelSource,
    birds,
    dog_breeds,
    efficientnet_lite,
    keras_imagenet,
)
from classification.selectors import model_default_name, model_name_exists, model_version_newest

MODELS = {
    "dog-breeds": "MobileNetV2 dog breeds (19 classes, 160 x 160), works offline",
    "imagenet": "Keras MobileNetV2 with ImageNet weights (1000 classes, 224 x 224), downloads",
    "imagenet-lite0": "EfficientNet-Lite0, ImageNet (1000 classes, 224 x 224), works offline",
    "mobilenet": "Keras MobileNet v1 with ImageNet weights (1000 classes, 224 x 224), downloads",
    "birds": "TF Hub AIY birds V1 (964 species and background, 224 x 224), downloads",
    "clip": "OpenAI's CLIP from the Hugging Face hub, zero-shot over CIFAR-100, downloads",
    "tiny-clip": "a tiny CLIP trained here on coloured squares (zero-shot, 32 x 32), works offline",
}
CLIP_DEFAULT_NAME = "clip-cifar100"
# The offline models whose preprocessing changed since versions were registered: --if-missing
# registers the current recipe as a new version when the newest version has another.
RECIPES = {"imagenet-lite0": efficientnet_lite.PREPROCESSING}


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
        parser.add_argument(
            "--name",
            help=f"The registered model's name (default: the model's, {CLIP_DEFAULT_NAME!r} "
            "for clip).",
        )
        clip = parser.add_argument_group("clip")
        clip.add_argument(
            "--repo",
            help="Another CLIP on the hub (owner/name; default openai/clip-vit-base-patch32).",
        )
        clip.add_argument(
            "--revision", help="A branch, tag or commit of the repository (default main)."
        )
        clip.add_argument(
            "--labels",
            type=Path,
            help="A JSON list or one label per line (default: the 100 CIFAR-100 classes).",
        )

    def handle(self, *args: object, model: str, **options: object) -> None:
        name = str(options["name"] or (CLIP_DEFAULT_NAME if model == "clip" else model))
        if model != "clip" and any(options[o] is not None for o in ("repo", "revision", "labels")):
            raise CommandError("--repo, --revision and --labels are for clip.")
        if options["if_no_production"] and model_default_name() is not None:
            self.stdout.write(f"A model is already in production ({model_default_name()}).")
            return
        stage = str(options["stage"])
        if options["if_missing"] and model_name_exists(name=name):
            outdated = _outdated_version(model, name=name)
            if outdated is None:
                self.stdout.write(f"{name} is already registered.")
                return
            # A new version, never an edited one; it serves where the one it follows served.
            stage = str(
                ModelVersion.Stage.PRODUCTION
                if outdated.stage == ModelVersion.Stage.PRODUCTION
                else ModelVersion.Stage.STAGING
            )
            self.stdout.write(
                f"{outdated} prepares images as {name}'s source no longer does: registering "
                f"the current preprocessing as a new version ({stage})."
            )
        self.stdout.write(f"Fetching {model}: {MODELS[model]} ...")
        if model == "clip":
            self._clip(name=name, options=options)
            return
        if model == "tiny-clip":
            self._tiny_clip(name=name, stage=stage)
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
                    name=name,
                    labels=source.labels,
                    input_size=source.input_size,
                    stage=stage,
                    source=source.source,
                    preprocessing=source.preprocessing,
                )
        except ModelRegistrationError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"Registered {model_version}."))

    def _tiny_clip(self, *, name: str, stage: str) -> None:
        # Imported here: KerasHub and TensorFlow are needed by zero-shot registrations only.
        from classification.registry.sources.tiny_clip import TINY_CLIP_LABELS, tiny_clip_register

        try:
            model_version = tiny_clip_register(name=name, stage=stage)
        except ModelRegistrationError as exc:
            raise CommandError(str(exc)) from exc
        labels = ", ".join(TINY_CLIP_LABELS)
        self.stdout.write(
            self.style.SUCCESS(f"Registered {model_version} (zero-shot; its labels: {labels}).")
        )

    def _clip(self, *, name: str, options: dict) -> None:
        # Imported here: KerasHub and TensorFlow are needed by this model only.
        from classification.registry.sources.hf_clip import DEFAULT_REPO, hf_clip_register

        labels_path = options["labels"]
        try:
            model_version = hf_clip_register(
                repo=options["repo"] or DEFAULT_REPO,
                revision=options["revision"] or "main",
                name=name,
                labels=read_labels(labels_path) if labels_path else None,
                stage=str(options["stage"]),
                progress=_Progress(self.stderr),
            )
        except ModelRegistrationError as exc:
            raise CommandError(str(exc)) from exc
        metrics = model_version.metrics
        self.stdout.write(
            self.style.SUCCESS(
                f"Registered {model_version} (zero-shot, {len(model_version.labels)} labels) "
                f"from {model_version.source}. Keras against the NumPy reference: "
                f"{metrics['reference_max_abs_diff']:.2e} (image), "
                f"{metrics['text_reference_max_abs_diff']:.2e} (text); LiteRT against Keras: "
                f"{metrics['parity_max_abs_diff']:.2e}, {metrics['text_parity_max_abs_diff']:.2e}."
            )
        )


class _Progress:
    """The command's stderr for tqdm, which ends its own lines (carriage returns)."""

    def __init__(self, stream: OutputWrapper) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        self.stream.write(text, ending="")

    def flush(self) -> None:
        self.stream.flush()


def _outdated_version(model: str, *, name: str) -> ModelVersion | None:
    """The newest version of ``name`` when it records another preprocessing than ``model``'s
    current recipe (RECIPES), else None (also for models without a recipe)."""
    recipe = RECIPES.get(model)
    newest = model_version_newest(name=name)
    if recipe is None or newest is None:
        return None
    if preprocessing_with_defaults(newest.preprocessing) == preprocessing_with_defaults(recipe):
        return None
    return newest


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
