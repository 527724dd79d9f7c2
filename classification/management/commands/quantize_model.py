from collections.abc import Callable
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classification.exceptions import ModelRegistrationError
from classification.models import ModelVersion
from classification.registry.photos import Photo, folder_photos, wheel_photos
from classification.registry.quantization import (
    DEFAULT_CALIBRATION_SAMPLES,
    FLOAT_OPS,
    int8_name,
    int8_version_exists,
    model_version_quantize,
)
from classification.registry.sources.efficientnet_lite import NUM_CLASSES, imagenet_wordnet_ids
from classification.selectors import model_version_get, model_version_production


class Command(BaseCommand):
    help = (
        "Register the int8 (full-integer) LiteRT version of a float classifier as <name>-int8, "
        "calibrated on real photos, with its fidelity against the float version on photos it "
        "was not calibrated on. Offline by default: the photos that installed wheels ship."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="A registered classifier (its Keras source is used).")
        parser.add_argument(
            "--model-version",
            type=int,
            help="The float version to quantize (default: the production one).",
        )
        parser.add_argument(
            "--calibration", type=Path, help="A folder of calibration photos (default: wheels')."
        )
        parser.add_argument(
            "--held-out",
            type=Path,
            help="A folder of other photos for the fidelity report, labelled by ImageNet-style "
            "WordNet-id names for 1000-class ImageNet models (default: wheels' held-out ones).",
        )
        parser.add_argument("--samples", type=int, default=DEFAULT_CALIBRATION_SAMPLES)
        parser.add_argument(
            "--int8-logits",
            action="store_true",
            help="Quantize the last layer too (by default it stays in float: see the docs).",
        )
        parser.add_argument("--stage", choices=ModelVersion.Stage.values, default="production")
        parser.add_argument(
            "--if-missing",
            action="store_true",
            help="Do nothing when the float version already has an int8 version (used by "
            "'make run'; a new float version gets its own).",
        )

    def handle(self, *args: object, name: str, **options: object) -> None:
        fp32 = self._fp32(name, options["model_version"])  # type: ignore[arg-type]
        if options["if_missing"] and int8_version_exists(fp32=fp32):
            self.stdout.write(f"{int8_name(name)} is already registered.")
            return
        folders: dict[str, Path | None] = {
            "calibration": options["calibration"],  # type: ignore[dict-item]
            "held_out": options["held_out"],  # type: ignore[dict-item]
        }
        try:
            calibration, calibration_set = self._photos(
                folders["calibration"], fp32, held_out=False
            )
            held_out, held_out_set = self._photos(folders["held_out"], fp32, held_out=True)
        except ModelRegistrationError as exc:
            if not options["if_missing"]:
                raise CommandError(str(exc)) from exc
            # 'make run' on a machine that cannot reach the package index: the float version
            # serves, as it would without the int8 one.
            self.stdout.write(
                f"No wheel photos to calibrate on ({exc}): {int8_name(name)} not made."
            )
            return
        self.stdout.write(
            f"Quantizing {fp32} on {len(calibration)} calibration photos "
            f"({options['samples']} samples) ..."
        )
        try:
            int8 = model_version_quantize(
                fp32=fp32,
                calibration=calibration,
                calibration_set=calibration_set,
                held_out=held_out,
                held_out_set=held_out_set,
                samples=int(options["samples"]),  # type: ignore[call-overload]
                float_ops=() if options["int8_logits"] else FLOAT_OPS,
                stage=str(options["stage"]),
            )
        except ModelRegistrationError as exc:
            raise CommandError(str(exc)) from exc
        fidelity = int8.metrics["fidelity"]
        rule = fidelity["default_rule"]
        verdict = (
            "it may answer by default"
            if rule["passes"]
            else f"the float version stays the default: {'; '.join(rule['reasons'])}"
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"Registered {int8} ({int8.artifact_size / 1e6:.1f} MB). On {fidelity['photos']} "
                + (
                    f"photos of {fidelity['photo_set']} (recorded for this model: "
                    f"{fidelity['recorded']['matched_by']})"
                    if "recorded" in fidelity
                    else "held-out photos"
                )
                + f": top-1 agreement {fidelity['top1_agreement']}, where float is "
                f"confident {fidelity['confident_top1_agreement']}; mean |confidence delta| "
                f"{fidelity['mean_abs_confidence_delta']}; {verdict}."
            )
        )

    def _fp32(self, name: str, version: int | None) -> ModelVersion:
        found = (
            model_version_production(name=name)
            if version is None
            else model_version_get(name=name, version=version)
        )
        if found is None:
            which = "no production version" if version is None else f"no version {version}"
            raise CommandError(f"{name!r} has {which}.")
        return found

    def _photos(
        self, folder: Path | None, fp32: ModelVersion, *, held_out: bool
    ) -> tuple[list[Photo], str]:
        if folder is None:
            photos = wheel_photos(held_out=held_out, download=True)
            return photos, f"wheel photos ({'held out' if held_out else 'calibration'})"
        if not folder.is_dir():
            raise CommandError(f"{folder} is not a folder.")
        labels = _wordnet_labels(fp32) if held_out else None
        photos = folder_photos(folder, label_of_wordnet_id=labels)
        if not photos:
            raise CommandError(f"{folder} holds no photos.")
        return photos, folder.name


def _wordnet_labels(fp32: ModelVersion) -> Callable[[str], str | int | None] | None:
    """WordNet id -> output index, for a 1000-class ImageNet model; None for other models."""
    if len(fp32.labels) != NUM_CLASSES:
        return None
    index_of: dict[str, str | int] = {wnid: i for i, wnid in enumerate(imagenet_wordnet_ids())}
    return index_of.get
