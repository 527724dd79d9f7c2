"""Interrupted jobs continue where they stopped: training from its last checkpoint, batch
predictions from their finished chunks after the process is killed."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.paths import ROOT
from training import services
from training.dataset import dataset_generate
from training.pipeline import _tensorflow
from training.services import STATE_FILE, TrainingConfig, model_train

pytestmark = pytest.mark.slow

# The plumbing only: a random backbone at 32 pixels trains an epoch in about a second.
TINY_CONFIG = TrainingConfig(
    input_size=32,
    batch_size=16,
    epochs=4,
    fine_tune_epochs=1,
    learning_rate=3e-3,
    patience=10,
    weights="random",
)


class Interrupted(Exception):
    """Stands for a kill right after an epoch's checkpoint was written."""


def _tag_head_weights(model) -> list[np.ndarray]:
    return [np.array(w, copy=True) for w in model.get_layer("tags").get_weights()]


@pytest.fixture
def watched_epochs(monkeypatch) -> dict[str, list]:
    """The tag head's weights when each fit starts (after any restore) and after each epoch."""
    seen: dict[str, list] = {"start": [], "epoch_end": []}
    original = services._epoch_logger

    def watching(**kwargs):
        callback = original(**kwargs)
        on_epoch_end = callback.on_epoch_end

        def on_train_begin(logs=None):
            seen["start"].append((kwargs["phase"], _tag_head_weights(callback.model)))

        def on_epoch_end_watched(epoch, logs=None):
            seen["epoch_end"].append((kwargs["phase"], epoch, _tag_head_weights(callback.model)))
            on_epoch_end(epoch, logs)

        callback.on_train_begin = on_train_begin
        callback.on_epoch_end = on_epoch_end_watched
        return callback

    monkeypatch.setattr(services, "_epoch_logger", watching)
    return seen


def test_an_interrupted_training_continues_from_its_last_checkpoint(tmp_path, watched_epochs):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    data = dataset_generate(output_dir=tmp_path / "data", count=40, image_size=40, seed=5)
    run_dir = tmp_path / "run"
    arguments = {
        "data_path": data.data_path,
        "images_dir": data.images_dir,
        "run_dir": run_dir,
        "config": TINY_CONFIG,
        "verbose": 0,
    }

    def stop_after_the_second_epoch(line: str) -> None:
        if line.startswith("heads epoch 2/"):
            raise Interrupted

    with pytest.raises(Interrupted):
        model_train(**arguments, echo=stop_after_the_second_epoch)
    state = json.loads((run_dir / STATE_FILE).read_text())
    assert state["phases_done"] == []
    assert [row["epoch"] for row in state["history"]["heads"]] == [0, 1]
    assert (run_dir / "backup-heads" / "latest.weights.h5").exists()
    assert not (run_dir / services.MODEL_FILE).exists()
    fresh = watched_epochs["start"][0][1]
    checkpointed = watched_epochs["epoch_end"][-1][2]  # after epoch 2, as backed up
    assert any(not np.array_equal(a, b) for a, b in zip(fresh, checkpointed, strict=True))

    lines: list[str] = []
    result = model_train(**{**arguments, "config": None}, echo=lines.append)
    assert lines[0].startswith("Resuming the run")
    epochs = [line.split(" ")[:3] for line in lines if " epoch " in line]
    # Epochs 1 and 2 are not trained again, the fit starts from their weights, and the next
    # phase still trains all of its epochs.
    assert [" ".join(epoch) for epoch in epochs] == [
        "heads epoch 3/4",
        "heads epoch 4/4",
        "fine_tune epoch 1/1",
    ]
    (phase, resumed_start), _ = watched_epochs["start"][1:]
    assert phase == "heads"
    for resumed, saved in zip(resumed_start, checkpointed, strict=True):
        np.testing.assert_array_equal(resumed, saved)
    heads = result.summary["history"]["heads"]
    assert [row["epoch"] for row in heads] == [0, 1, 2, 3]
    assert heads[:2] == state["history"]["heads"]  # the curves before the interruption are kept
    assert result.model_path.exists() and not (run_dir / "backup-heads").exists()


def test_a_resumed_seeded_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    """Each epoch's order, augmentation and dropout are drawn from the seed and the epoch's
    number, so the epochs after a resume are those the uninterrupted run trained."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    data = dataset_generate(output_dir=tmp_path / "data", count=40, image_size=40, seed=5)
    arguments = {
        "data_path": data.data_path,
        "images_dir": data.images_dir,
        "config": replace(TINY_CONFIG, seed=4),
        "verbose": 0,
    }
    whole = model_train(**arguments, run_dir=tmp_path / "whole", echo=lambda line: None)
    # Early stopping keeps the best epoch's weights and forgets the epochs before a resume:
    # the comparison holds when the best epoch is the last, as here.
    losses = [row["val_loss"] for row in whole.summary["history"]["heads"]]
    assert losses == sorted(losses, reverse=True)

    def stop_after_the_second_epoch(line: str) -> None:
        if line.startswith("heads epoch 2/"):
            raise Interrupted

    with pytest.raises(Interrupted):
        model_train(**arguments, run_dir=tmp_path / "cut", echo=stop_after_the_second_epoch)
    resumed = model_train(**arguments, run_dir=tmp_path / "cut", echo=lambda line: None)

    def curves(result) -> dict:  # every figure of every epoch but its time
        return {
            phase: [{key: value for key, value in row.items() if key != "seconds"} for row in rows]
            for phase, rows in result.summary["history"].items()
        }

    assert curves(resumed) == curves(whole)
    keras = _tensorflow().keras
    weights = [keras.models.load_model(str(r.model_path)).get_weights() for r in (whole, resumed)]
    for uninterrupted, after_resume in zip(*weights, strict=True):
        np.testing.assert_array_equal(uninterrupted, after_resume)


# Runs predictions_batch in a process of its own on an unsaved copy of the registered version,
# pausing after each finished chunk so that the test can kill it between two chunks.
_BATCH_SCRIPT = """
import json, sys, time
import django
django.setup()
from classification.models import ModelVersion
from training.batch import predictions_batch

arguments = json.loads(sys.argv[1])
predictions_batch(
    input_path=arguments["input"],
    images_dir=arguments["images"],
    output_path=arguments["output"],
    model_version=ModelVersion(**arguments["version"]),
    workers=2,
    chunk_size=4,
    progress=False,
    on_chunk=lambda index: time.sleep(0.3),
)
"""
_VERSION_FIELDS = [
    "name", "version", "kind", "artifact", "artifact_sha256", "input_size", "preprocessing",
    "labels", "tag_labels", "tag_thresholds",
]  # fmt: skip


def test_a_killed_batch_finishes_only_the_rest_on_a_rerun(
    garment_model, garment_dataset, settings, tmp_path
):
    from training.batch import predictions_batch

    uuids = pq.read_table(garment_dataset.test_path).column("uuid").to_pylist()
    test_path = tmp_path / "test.parquet"
    pq.write_table(pa.table({"uuid": uuids}), test_path)
    output = tmp_path / "predictions.parquet"
    parts = output.with_name(output.name + ".parts")
    arguments = {
        "input": str(test_path),
        "images": str(garment_dataset.images_dir),
        "output": str(output),
        "version": {field: getattr(garment_model, field) for field in _VERSION_FIELDS},
    }
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "classifier_site.settings",
        "MODEL_STORE": str(settings.MODEL_STORE),
        "PYTHONPATH": str(ROOT),
    }
    # A session of its own, so that the parent and its pool workers die together.
    process = subprocess.Popen(
        [sys.executable, "-c", _BATCH_SCRIPT, json.dumps(arguments)],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while len(list(parts.glob("part-*.parquet"))) < 3:
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "the batch never finished three chunks"
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    finished = len(list(parts.glob("part-*.parquet")))
    chunks = -(-len(uuids) // 4)
    assert 3 <= finished < chunks and not output.exists()

    report = predictions_batch(
        input_path=test_path,
        images_dir=garment_dataset.images_dir,
        output_path=output,
        model_version=garment_model,
        workers=2,
        chunk_size=4,
        progress=False,
    )
    assert report.skipped == 4 * finished
    assert report.predicted == len(uuids) - 4 * finished
    table = pq.read_table(output)
    assert table.column("uuid").to_pylist() == uuids
    assert table.column("category1").null_count == 0
    assert not parts.exists()
