from pathlib import Path

from django.core.management.base import BaseCommand, CommandParser

from training.dataset import dataset_generate


class Command(BaseCommand):
    help = "Write a generated garment dataset in the marketplace's format (images + Parquet)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--output", type=Path, required=True)
        parser.add_argument("--count", type=int, default=1000, help="Labelled rows.")
        parser.add_argument("--test-count", type=int, default=200, help="Rows of test.parquet.")
        parser.add_argument("--image-size", type=int, default=128)
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args: object, **options: object) -> None:
        dataset = dataset_generate(
            output_dir=options["output"],  # type: ignore[arg-type]
            count=options["count"],  # type: ignore[arg-type]
            test_count=options["test_count"],  # type: ignore[arg-type]
            image_size=options["image_size"],  # type: ignore[arg-type]
            seed=options["seed"],  # type: ignore[arg-type]
        )
        self.stdout.write(
            f"Wrote {dataset.data_path} ({options['count']} rows), {dataset.test_path} "
            f"({options['test_count']} rows) and their images in {dataset.images_dir}"
        )
