from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classification.exceptions import ModelNotReady, UnknownModel
from training.batch import batch_model_version, predictions_batch
from training.exceptions import TrainingError

DEFAULT_MODEL = "garments"


class Command(BaseCommand):
    help = (
        "Predict test.parquet's uuids into predictions.parquet (uuid, category1, category2, "
        "polka dot, floral, checker) with a multi-task model; rerun to resume."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--input", type=Path, required=True, help="test.parquet")
        parser.add_argument("--images", type=Path, required=True, help="The images folder.")
        parser.add_argument("--output", type=Path, required=True, help="predictions.parquet")
        parser.add_argument("--model", default=DEFAULT_MODEL, help="A registered model name.")
        # Not --version: every Django command has that one (Django's own version).
        parser.add_argument(
            "--model-version", dest="version", type=int, help="A version (default: production)."
        )
        parser.add_argument("--workers", type=int, default=2, help="Worker processes.")
        parser.add_argument("--chunk-size", type=int, default=64)
        parser.add_argument(
            "--shard",
            default="0/1",
            help="INDEX/COUNT: predict only every COUNT-th chunk from INDEX into the shared "
            "parts folder (one pod of an Indexed Job); a last run without it writes the output.",
        )

    def handle(self, *args: object, **options: object) -> None:
        try:
            index, count = (int(part) for part in str(options["shard"]).split("/"))
        except ValueError as exc:
            raise CommandError(f"--shard takes INDEX/COUNT, not {options['shard']!r}.") from exc
        try:
            version = batch_model_version(
                name=options["model"],  # type: ignore[arg-type]
                version=options["version"],  # type: ignore[arg-type]
            )
            report = predictions_batch(
                input_path=options["input"],  # type: ignore[arg-type]
                images_dir=options["images"],  # type: ignore[arg-type]
                output_path=options["output"],  # type: ignore[arg-type]
                model_version=version,
                workers=options["workers"],  # type: ignore[arg-type]
                chunk_size=options["chunk_size"],  # type: ignore[arg-type]
                progress=int(options["verbosity"]) >= 1,  # type: ignore[call-overload]
                shard=(index, count),
            )
        except (TrainingError, UnknownModel, ModelNotReady) as exc:
            raise CommandError(str(exc)) from exc
        if count > 1:
            self.stdout.write(
                f"Shard {index}/{count}: {report.predicted} rows predicted in "
                f"{report.seconds:.2f} s, {report.skipped} finished before; run without --shard "
                f"once every shard is done to write {report.output_path}"
            )
            return
        self.stdout.write(
            f"{report.rows} rows in {report.output_path} with {version}: predicted "
            f"{report.predicted} in {report.seconds:.2f} s ({report.images_per_second:.1f} "
            f"images/s, {options['workers']} workers), {report.skipped} finished before, "
            f"{report.failed} null rows (reasons logged)"
        )
