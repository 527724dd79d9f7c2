"""Training the multi-task garment model, resumably, and registering what it produced.

A run lives in one folder (``run_dir``): ``state.json`` (configuration, the split, finished
phases, per-epoch history), Keras' backup of the phase in progress, and at the end
``model.keras`` (loads back in one call) with ``training.json`` (labels, tag labels, tuned
thresholds, curves, validation figures). Rerunning the same command on the same folder
continues from the last finished epoch.
"""

import contextlib
import json
import logging
import secrets
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from classification.models import ModelVersion
from classification.registry.multi_task import multi_task_version_register
from training import figures
from training.dataset import CATEGORIES, TAGS, DataSource, GarmentLabels, datasets_load
from training.exceptions import TrainingError
from training.model import (
    PREPROCESSING,
    backbone_unfreeze_top,
    class_weights_balanced,
    model_compile,
    multi_task_model_build,
)
from training.pipeline import Split, _tensorflow, dataset_build, epoch_counter, split_stratified

logger = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
SUMMARY_FILE = "training.json"
STATE_FILE = "state.json"
PHASES = ("heads", "fine_tune")


@dataclass(frozen=True)
class TrainingConfig:
    input_size: int = 224
    batch_size: int = 32
    epochs: int = 10  # the heads phase, at most (early stopping)
    fine_tune_epochs: int = 5
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-4
    patience: int = 3
    validation_fraction: float = 0.2
    # A number makes the run reproducible on one machine (seeded split, initialisation, shuffle,
    # augmentation and dropout; deterministic ops); None draws a fresh seed each run.
    seed: int | None = None
    weights: str = "imagenet"


@dataclass
class TrainingResult:
    run_dir: Path
    model_path: Path
    summary: dict = field(repr=False)


def _state_read(run_dir: Path) -> dict | None:
    path = run_dir / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else None


def _state_write(run_dir: Path, state: dict) -> None:
    path = run_dir / STATE_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(state, indent=1))
    temporary.replace(path)  # a kill mid-write leaves the previous state intact


def _epoch_logger(*, run_dir: Path, state: dict, phase: str, epochs: int, echo: Any) -> Any:
    keras = _tensorflow().keras

    class EpochLine(keras.callbacks.Callback):  # type: ignore[name-defined]
        """One line per epoch, and the epoch's figures kept in the run's state (a resumed
        run keeps the curves of the epochs before the interruption)."""

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            seconds = time.perf_counter() - self.started
            values = {key: float(value) for key, value in (logs or {}).items()}
            history = state["history"].setdefault(phase, [])
            history[:] = [row for row in history if row["epoch"] != epoch]
            history.append({"epoch": epoch, "seconds": round(seconds, 3), **values})
            _state_write(run_dir, state)
            shown = " ".join(
                f"{key}={values[key]:.4f}"
                for key in (
                    "loss",
                    "val_loss",
                    "category_accuracy",
                    "val_category_accuracy",
                    "val_tags_auc",
                )
                if key in values
            )
            echo(f"{phase} epoch {epoch + 1}/{epochs} {seconds:.1f}s {shown}")

    return EpochLine()


# Room for this many dropout draws (one per step) before an epoch's range meets the next's.
# Keras folds the state into int32 before drawing: 2**20 steps an epoch, 2,047 epochs.
_DROPOUT_DRAWS_PER_EPOCH = 2**20


def _epoch_setter(*, counter: Any, first: int) -> Any:
    keras = _tensorflow().keras

    class EpochNumber(keras.callbacks.Callback):  # type: ignore[name-defined]
        """Tells the training dataset which epoch starts (counted across the phases), so its
        shuffle and augmentation are those of that epoch, resumed or not. The dropout's
        random state starts each epoch from the epoch's number too: Keras' backups do not
        keep it, and a resumed run would otherwise replay the first epochs' masks."""

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            counter.assign(first + epoch)
            for layer in self.model.layers:
                generator = getattr(layer, "seed_generator", None)
                if generator is not None:
                    seed = generator.state.numpy()[0]
                    generator.state.assign([seed, (first + epoch) * _DROPOUT_DRAWS_PER_EPOCH])

    return EpochNumber()


@contextlib.contextmanager
def _determinism(seed: int | None) -> Iterator[None]:
    """With a seed: Python, NumPy and TensorFlow seeded and TensorFlow's ops deterministic,
    for the block (op determinism is put back as it was after). Without: nothing changes."""
    if seed is None:
        yield
        return
    tf = _tensorflow()
    # Only enabling is public API; the switch back is TensorFlow's own, in its config module.
    from tensorflow.python.framework import config as tf_config

    tf.keras.utils.set_random_seed(seed)
    enabled_before = tf_config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if not enabled_before:
            tf_config.disable_op_determinism()


def _split_from_state(labels: GarmentLabels, state: dict) -> Split:
    index = {uuid: row for row, uuid in enumerate(labels.uuids)}
    try:
        return Split(
            train=np.array([index[uuid] for uuid in state["split"]["train"]]),
            validation=np.array([index[uuid] for uuid in state["split"]["validation"]]),
        )
    except KeyError as exc:
        raise TrainingError(
            f"The run folder was started on other data (uuid {exc} is not in it): "
            "use a new --run-dir."
        ) from exc


def model_train(
    *,
    run_dir: Path,
    data_path: Path | None = None,
    images_dir: Path | None = None,
    datasets: Sequence[DataSource] = (),
    config: TrainingConfig | None = None,
    verbose: int = 1,
    echo: Any = print,
) -> TrainingResult:
    """Train the multi-task model on ``data_path`` / ``images_dir``, or on several data sets
    concatenated (``datasets``, in order), into ``run_dir``.

    The data is checked first (DatasetError before any training; several sets must declare the
    same categories and tags and share no uuid: ``datasets_load``). Phase one trains the heads on
    the frozen ImageNet backbone, phase two fine-tunes the backbone's top blocks; each stops
    early on the validation loss and keeps its best weights. Per-tag thresholds are then tuned
    on the validation split for the best F1. A run folder that holds an unfinished run
    continues it (its configuration and split are the stored ones). With ``config.seed`` the
    run is reproducible on one machine: the same data, configuration and seed give the same
    weights, resumed or not. ``verbose`` is Keras' (1: progress bars); ``echo`` prints the
    per-epoch lines.
    """
    if (data_path is None) != (images_dir is None) or bool(datasets) == (data_path is not None):
        raise TypeError("Give data_path and images_dir, or datasets.")
    if data_path is not None and images_dir is not None:
        datasets = [DataSource(data_path=Path(data_path), images_dir=Path(images_dir))]
    labels = datasets_load(sources=list(datasets))
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = _state_read(run_dir)
    if state is None:
        config = config or TrainingConfig()
        split = split_stratified(
            categories=labels.categories,
            validation_fraction=config.validation_fraction,
            seed=config.seed if config.seed is not None else secrets.randbits(31),
        )
        state = {
            "config": asdict(config),
            "split": {
                "train": [labels.uuids[row] for row in split.train],
                "validation": [labels.uuids[row] for row in split.validation],
            },
            "phases_done": [],
            "history": {},
        }
        _state_write(run_dir, state)
    else:
        config = TrainingConfig(**state["config"])
        split = _split_from_state(labels, state)
        echo(f"Resuming the run in {run_dir} (finished phases: {state['phases_done'] or 'none'})")
    if len(split.validation) == 0 or len(split.train) == 0:
        raise TrainingError("Too few rows to hold out a validation split: add data.")
    with _determinism(config.seed):
        return _phases_train(
            labels=labels,
            split=split,
            images_dir=datasets[0].images_dir,  # each row's image is in labels.image_paths
            run_dir=run_dir,
            config=config,
            state=state,
            verbose=verbose,
            echo=echo,
        )


def _phases_train(
    *,
    labels: GarmentLabels,
    split: Split,
    images_dir: Path,
    run_dir: Path,
    config: TrainingConfig,
    state: dict,
    verbose: int,
    echo: Any,
) -> TrainingResult:
    keras = _tensorflow().keras
    # Unseeded, the data still needs one seed: the shuffle and augmentation are stateless.
    data_seed = config.seed if config.seed is not None else secrets.randbits(31)
    epoch = epoch_counter()
    common: dict[str, Any] = {
        "labels": labels,
        "images_dir": images_dir,
        "input_size": config.input_size,
        "preprocessing": PREPROCESSING,
        "batch_size": config.batch_size,
    }
    train = dataset_build(
        rows=split.train, augment=True, shuffle=True, seed=data_seed, epoch=epoch, **common
    )
    validation = dataset_build(rows=split.validation, **common)
    class_weights = class_weights_balanced(
        categories=labels.categories[split.train], num_categories=len(CATEGORIES)
    )
    model = multi_task_model_build(
        input_size=config.input_size,
        num_categories=len(CATEGORIES),
        num_tags=len(TAGS),
        weights=config.weights,
        workdir=run_dir,
        seed=config.seed,
    )

    for phase in PHASES:
        weights_path = run_dir / f"{phase}.weights.h5"
        if phase == "fine_tune":
            backbone_unfreeze_top(model=model)
        learning_rate = config.learning_rate if phase == "heads" else config.fine_tune_learning_rate
        model_compile(model=model, class_weights=class_weights, learning_rate=learning_rate)
        if phase in state["phases_done"]:
            model.load_weights(weights_path)
            continue
        epochs = config.epochs if phase == "heads" else config.fine_tune_epochs
        if epochs > 0:
            first = 0 if phase == "heads" else config.epochs
            callbacks = [
                _epoch_setter(counter=epoch, first=first),
                keras.callbacks.BackupAndRestore(str(run_dir / f"backup-{phase}")),
                keras.callbacks.EarlyStopping(
                    monitor="val_loss", patience=config.patience, restore_best_weights=True
                ),
                _epoch_logger(run_dir=run_dir, state=state, phase=phase, epochs=epochs, echo=echo),
            ]
            # BackupAndRestore resumes a fit by setting the model's private _initial_epoch,
            # which Keras never clears: after a resumed phase the next phase's fit would start
            # at that epoch (and, with fewer epochs, train none). Each phase starts afresh.
            model._initial_epoch = None
            model.fit(
                train,
                validation_data=validation,
                epochs=epochs,
                callbacks=callbacks,
                verbose=verbose,
            )
        model.save_weights(weights_path)
        state["phases_done"].append(phase)
        _state_write(run_dir, state)

    scores = model.predict(validation, verbose=0)
    truth = labels.tags[split.validation]
    thresholds = [
        figures.threshold_tune(true=truth[:, column], scores=scores["tags"][:, column])
        for column in range(len(TAGS))
    ]
    ranked = np.argsort(-scores["category"], axis=1)
    true_categories = labels.categories[split.validation]
    summary = {
        "labels": CATEGORIES,
        "tag_labels": TAGS,
        "tag_thresholds": thresholds,
        "input_size": config.input_size,
        "preprocessing": PREPROCESSING,
        "config": state["config"],
        "history": state["history"],
        "epoch_seconds": [row["seconds"] for rows in state["history"].values() for row in rows],
        "split": state["split"],
        "validation": {
            "top1_accuracy": figures.top_k_accuracy(true=true_categories, ranked=ranked, k=1),
            "top2_accuracy": figures.top_k_accuracy(true=true_categories, ranked=ranked, k=2),
            "tags": {
                tag: figures.precision_recall_f1(
                    true=truth[:, column], predicted=scores["tags"][:, column] >= thresholds[column]
                )
                for column, tag in enumerate(TAGS)
            },
        },
        "backbone": config.weights,
    }
    model_path = run_dir / MODEL_FILE
    # An uncompiled model over the same layers: it loads back with keras.models.load_model
    # alone (no custom loss to import) and carries no optimizer state.
    keras.Model(model.inputs, model.output, name=model.name).save(model_path)
    (run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
    for phase in PHASES:
        shutil.rmtree(run_dir / f"backup-{phase}", ignore_errors=True)
    echo(
        f"Validation: top-1 {summary['validation']['top1_accuracy']:.3f}, "
        f"top-2 {summary['validation']['top2_accuracy']:.3f}, tag F1 "
        + ", ".join(f"{tag} {summary['validation']['tags'][tag]['f1']:.3f}" for tag in TAGS)
        + f"; thresholds {thresholds}; model {model_path}"
    )
    return TrainingResult(run_dir=run_dir, model_path=model_path, summary=summary)


def training_summary_read(*, run_dir: Path) -> dict:
    """The summary of a finished run. Raises TrainingError when the run is not finished."""
    path = Path(run_dir) / SUMMARY_FILE
    if not path.exists() or not (Path(run_dir) / MODEL_FILE).exists():
        raise TrainingError(f"{run_dir} holds no finished training run (no {SUMMARY_FILE}).")
    return json.loads(path.read_text())


def training_run_register(
    *, run_dir: Path, name: str, stage: str = ModelVersion.Stage.STAGING
) -> ModelVersion:
    """Register a finished run's ``model.keras`` as the next multi-task version of ``name``,
    with its labels, tag labels and thresholds (LiteRT parity checked on both heads)."""
    summary = training_summary_read(run_dir=run_dir)
    validation = summary["validation"]
    return multi_task_version_register(
        artifact_path=Path(run_dir) / MODEL_FILE,
        name=name,
        labels=summary["labels"],
        tag_labels=summary["tag_labels"],
        tag_thresholds=summary["tag_thresholds"],
        preprocessing=summary["preprocessing"],
        stage=stage,
        source=(
            "Garment listing model: EfficientNet-Lite0 "
            f"({summary['backbone']} backbone weights) fine-tuned with a category and a tag "
            f"head; validation top-1 {validation['top1_accuracy']:.3f}, "
            f"top-2 {validation['top2_accuracy']:.3f}."
        ),
    )
