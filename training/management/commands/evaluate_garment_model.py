from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from training.dataset import data_sources
from training.evaluation import REPORT_HTML, REPORT_JSON, model_evaluate
from training.exceptions import TrainingError


class Command(BaseCommand):
    help = (
        "Evaluate a finished training run on its validation split: report.html (self-contained) "
        "and report.json, with predictions.parquet and scores.parquet to recompute them from."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--data",
            type=Path,
            action="append",
            required=True,
            help="A data set the run was trained on: a folder holding data.parquet and "
            "images/, or a data.parquet file; repeat it as the training did.",
        )
        parser.add_argument(
            "--images",
            type=Path,
            action="append",
            help="The images folder of a data.parquet: once per --data, in the same order "
            "(default: images/ beside each data.parquet).",
        )
        parser.add_argument("--run-dir", type=Path, required=True)
        parser.add_argument("--output", type=Path, required=True, help="The report's folder.")

    def handle(self, *args: object, **options: object) -> None:
        try:
            report = model_evaluate(
                datasets=data_sources(
                    data=options["data"],  # type: ignore[arg-type]
                    images=options["images"],  # type: ignore[arg-type]
                ),
                run_dir=options["run_dir"],  # type: ignore[arg-type]
                output_dir=options["output"],  # type: ignore[arg-type]
            )
        except TrainingError as exc:
            raise CommandError(str(exc)) from exc
        model, costs = report["model"], report["costs"]
        output = options["output"]
        self.stdout.write(
            f"top-1 {model['top1_accuracy']:.3f} "
            f"(majority class {model['majority_top1_accuracy']:.3f}), "
            f"top-2 {model['top2_accuracy']:.3f}, tag F1 "
            + ", ".join(f"{t} {f['f1']:.3f}" for t, f in model["tags"].items())
            + f"; multi-task {costs['multi_task']['size_mb']:.2f} MB, "
            f"{costs['multi_task']['latency_ms_batch1']:.2f} ms/image "
            f"({costs['comparison']['latency_ratio_vs_category_only']:.2f}x the category model); "
            f"wrote {output}/{REPORT_HTML} and {output}/{REPORT_JSON}"
        )
