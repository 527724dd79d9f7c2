"""python -m bench garment: the garment model at full size (in make bench), not a test.

Writes var/bench/garment.json unless --output says where.
"""

import json
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from training.batch import predictions_batch
from training.dataset import dataset_generate
from training.evaluation import model_costs
from training.pipeline import _tensorflow
from training.services import TrainingConfig, model_train, training_run_register


class Command(BaseCommand):
    help = (
        "Benchmark the garment model at full size on a generated dataset: training time per "
        "epoch, LiteRT latency (batch 1 and batched), batch-prediction images/s, model size, "
        "and the multi-task model against a category-only one (goal: at most 1.2x)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--count", type=int, default=400)
        parser.add_argument("--test-count", type=int, default=400)
        parser.add_argument("--input-size", type=int, default=224)
        parser.add_argument("--workers", type=int, default=2)
        parser.add_argument("--output", type=Path, default=None, help="Where the JSON goes.")

    def handle(self, *args: object, **options: object) -> None:
        size = int(options["input_size"])  # type: ignore[call-overload]
        with tempfile.TemporaryDirectory() as workdir:
            root = Path(workdir)
            dataset = dataset_generate(
                output_dir=root / "data",
                count=options["count"],  # type: ignore[arg-type]
                test_count=options["test_count"],  # type: ignore[arg-type]
                image_size=256,
                seed=0,
            )
            run = model_train(
                data_path=dataset.data_path,
                images_dir=dataset.images_dir,
                run_dir=root / "run",
                config=TrainingConfig(input_size=size, epochs=2, fine_tune_epochs=1),
                verbose=0,
                echo=self.stdout.write,
            )
            model = _tensorflow().keras.models.load_model(str(run.model_path))
            costs = model_costs(model=model, input_size=size, runs=30)
            version = training_run_register(run_dir=run.run_dir, name="garments-bench")
            batch = predictions_batch(
                input_path=dataset.test_path,
                images_dir=dataset.images_dir,
                output_path=root / "predictions.parquet",
                model_version=version,
                workers=options["workers"],  # type: ignore[arg-type]
                progress=False,
            )
            version.delete()  # a benchmark leaves no model behind
        epochs = {
            phase: [row["seconds"] for row in rows]
            for phase, rows in run.summary["history"].items()
        }
        result = {
            "input_size": size,
            "train_rows": len(run.summary["split"]["train"]),
            "epoch_seconds": epochs,
            "costs": costs,
            "batch_prediction": {
                "rows": batch.rows,
                "workers": options["workers"],
                "seconds": round(batch.seconds, 3),
                "images_per_second": round(batch.images_per_second, 1),
            },
        }
        output = Path(str(options["output"] or Path(settings.VAR_DIR) / "bench" / "garment.json"))
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=1))
        self.stdout.write(
            f"Training, {result['train_rows']} images at {size} px, s/epoch: {epochs}"
        )
        for name in ("multi_task", "category_only", "tags_only", "two_separate_models"):
            c = costs[name]
            self.stdout.write(
                f"{name:20} {c['size_mb']:6.2f} MB  batch 1 {c['latency_ms_batch1']:6.2f} ms/img  "
                f"batch 16 {c['latency_ms_per_image_batch16']:6.2f} ms/img"
            )
        comparison = costs["comparison"]
        self.stdout.write(
            "multi-task / category-only latency "
            f"{comparison['latency_ratio_vs_category_only']:.2f}x "
            f"(goal <= 1.2x: {'met' if comparison['goal_met'] else 'NOT met'}); "
            f"batch predictions {result['batch_prediction']['images_per_second']} images/s "
            f"({options['workers']} workers); wrote {output}"
        )
