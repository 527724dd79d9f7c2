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
        parser.add_argument("--version", type=int, help="A version (default: production).")
        parser.add_argument("--workers", type=int, default=2, help="Worker processes.")
        parser.add_argument("--chunk-size", type=int, default=64)

    def handle(self, *args: object, **options: object) -> None:
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
            )
        except (TrainingError, UnknownModel, ModelNotReady) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"{report.rows} rows in {report.output_path} with {version}: predicted "
            f"{report.predicted} in {report.seconds:.2f} s ({report.images_per_second:.1f} "
            f"images/s, {options['workers']} workers), {report.skipped} finished before, "
            f"{report.failed} null rows (reasons logged)"
        )
