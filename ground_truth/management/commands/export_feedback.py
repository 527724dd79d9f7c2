from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ground_truth.exports import FORMATS, ExportError, feedback_export


class Command(BaseCommand):
    help = (
        "Write the trusted feedback on a model as training data: --format parquet (multi-task: "
        "data.parquet and images/, which train_garment_model reads) or --format folder "
        "(<label>/<sha256>.<ext> and manifest.csv, which evaluate_model reads)."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        # --version names the model's version here, not Django's.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model", required=True, help="The registered model's name.")
        parser.add_argument(
            "--version", type=int, help="Only feedback on this version (default: every version)."
        )
        parser.add_argument("--format", choices=FORMATS, default="parquet")
        parser.add_argument(
            "--output", type=Path, required=True, help="A new (or empty) folder to write into."
        )
        parser.add_argument(
            "--include-pending",
            action="store_true",
            help="Export feedback not yet reviewed too (rejected feedback never is).",
        )

    def handle(self, *args: object, **options: Any) -> None:
        try:
            summary = feedback_export(
                name=options["model"],
                output_dir=options["output"],
                export_format=options["format"],
                version=options["version"],
                include_pending=options["include_pending"],
            )
        except ExportError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(summary.line())
