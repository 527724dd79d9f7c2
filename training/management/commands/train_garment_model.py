from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classification.exceptions import ModelRegistrationError
from training.dataset import data_sources
from training.exceptions import TrainingError
from training.services import TrainingConfig, model_train, training_run_register


class Command(BaseCommand):
    help = (
        "Train the multi-task garment model (category + pattern tags) on one or more data sets "
        "(data.parquet and an images folder each); rerun on the same --run-dir to resume. "
        "--register NAME registers it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        defaults = TrainingConfig()
        parser.add_argument(
            "--data",
            type=Path,
            action="append",
            required=True,
            metavar="DATA",
            help="A data set: a folder holding data.parquet and images/, or a data.parquet "
            "file. Repeat it to train on several data sets at once (concatenated in order; "
            "they must have the same categories and tags and share no uuid).",
        )
        parser.add_argument(
            "--images",
            type=Path,
            action="append",
            metavar="DIR",
            help="The images folder of a data.parquet: once per --data, in the same order "
            "(default: images/ beside each data.parquet).",
        )
        parser.add_argument("--run-dir", type=Path, required=True)
        parser.add_argument("--input-size", type=int, default=defaults.input_size)
        parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
        parser.add_argument("--epochs", type=int, default=defaults.epochs)
        parser.add_argument("--fine-tune-epochs", type=int, default=defaults.fine_tune_epochs)
        parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
        parser.add_argument("--patience", type=int, default=defaults.patience)
        parser.add_argument(
            "--seed",
            type=int,
            default=defaults.seed,
            help="Make the run reproducible on this machine (seeded split, initialisation, "
            "shuffle and augmentation; deterministic TensorFlow ops, a little slower). "
            "Without it every run draws its own seed.",
        )
        parser.add_argument(
            "--weights",
            choices=["imagenet", "random"],
            default=defaults.weights,
            help="Backbone weights: the offline ImageNet EfficientNet-Lite0, or random.",
        )
        parser.add_argument("--register", metavar="NAME", help="Register the trained model.")
        parser.add_argument("--stage", default="staging", choices=["staging", "production"])

    def handle(self, *args: object, **options: object) -> None:
        config = TrainingConfig(
            input_size=options["input_size"],  # type: ignore[arg-type]
            batch_size=options["batch_size"],  # type: ignore[arg-type]
            epochs=options["epochs"],  # type: ignore[arg-type]
            fine_tune_epochs=options["fine_tune_epochs"],  # type: ignore[arg-type]
            learning_rate=options["learning_rate"],  # type: ignore[arg-type]
            patience=options["patience"],  # type: ignore[arg-type]
            seed=options["seed"],  # type: ignore[arg-type]
            weights=options["weights"],  # type: ignore[arg-type]
        )
        try:
            result = model_train(
                datasets=data_sources(
                    data=options["data"],  # type: ignore[arg-type]
                    images=options["images"],  # type: ignore[arg-type]
                ),
                run_dir=options["run_dir"],  # type: ignore[arg-type]
                config=config,
                verbose=1 if int(options["verbosity"]) >= 1 else 0,  # type: ignore[call-overload]
                echo=self.stdout.write,
            )
            if options["register"]:
                version = training_run_register(
                    run_dir=result.run_dir,
                    name=options["register"],  # type: ignore[arg-type]
                    stage=options["stage"],  # type: ignore[arg-type]
                )
                self.stdout.write(
                    f"Registered {version} (parity per head "
                    f"{version.metrics['parity_max_abs_diff_per_head']})"
                )
        except (TrainingError, ModelRegistrationError) as exc:
            raise CommandError(str(exc)) from exc
