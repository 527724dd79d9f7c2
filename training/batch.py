"""Batch predictions: ``test.parquet`` + an images folder -> ``predictions.parquet``.

The rows are cut into fixed chunks; worker processes predict chunks with the registered LiteRT
model (one interpreter each, one thread each) and the parent writes each finished chunk to
``<output>.parts/`` at once. A rerun after an interruption finds the finished chunks there and
predicts only the others. A missing or broken image gives a row of nulls (its uuid kept) and a
logged reason; it never stops the job.
"""

import hashlib
import json
import logging
import multiprocessing
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from django.conf import settings
from tqdm import tqdm

from classification.exceptions import ModelNotReady, UnknownModel
from classification.models import ModelVersion
from classification.serving.imaging import image_decode, image_preprocess
from classification.serving.multi_task import CATEGORY_HEAD, TAGS_HEAD, LiteRTHeads
from classification.store import artifact_read_verified
from training.dataset import PREDICTION_COLUMNS, PREDICTION_SCHEMA, TAGS, image_path, uuids_read
from training.exceptions import TrainingError

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class BatchReport:
    rows: int
    predicted: int  # rows predicted by this run
    skipped: int  # rows already finished by an earlier run
    failed: int  # rows of nulls (missing or broken images), this run
    seconds: float
    output_path: Path

    @property
    def images_per_second(self) -> float:
        return self.predicted / self.seconds if self.seconds > 0 else 0.0


def batch_model_version(*, name: str, version: int | None = None) -> ModelVersion:
    """The multi-task version to predict with: ``version`` of ``name``, else its production one.

    Raises UnknownModel or ModelNotReady.
    """
    versions = ModelVersion.objects.filter(name=name)
    if not versions.exists():
        raise UnknownModel(f"No model called {name!r} is registered.")
    found = (
        versions.filter(version=version).first()
        if version is not None
        else versions.filter(stage=ModelVersion.Stage.PRODUCTION).first()
    )
    if found is None:
        wanted = f"version {version}" if version is not None else "a production version"
        raise ModelNotReady(f"Model {name!r} has no {wanted}.")
    if found.kind != ModelVersion.Kind.MULTI_TASK:
        raise TrainingError(f"{found} is a {found.kind} model; batch predictions need multi_task.")
    return found


# --- In the worker processes -----------------------------------------------------------------

_worker: dict = {}


def _worker_start(content: bytes, settings_of_version: dict) -> None:
    _worker["heads"] = LiteRTHeads(model_content=content, num_threads=1)
    _worker.update(settings_of_version)


def _chunk_predict(task: tuple[int, list[str], str]) -> tuple[int, list[dict], list[str]]:
    """(chunk index, rows, reasons for the rows of nulls) of one chunk of uuids."""
    index, uuids, images_dir = task
    size, preprocessing = _worker["input_size"], _worker["preprocessing"]
    inputs: list[np.ndarray] = []
    good: list[int] = []
    reasons: list[str] = []
    rows: list[dict] = [dict.fromkeys(PREDICTION_COLUMNS) | {"uuid": uuid} for uuid in uuids]
    for position, uuid in enumerate(uuids):
        path = image_path(images_dir=Path(images_dir), uuid=uuid)
        try:
            decoded = image_decode(data=path.read_bytes(), max_pixels=_worker["max_pixels"])
            inputs.append(
                image_preprocess(image=decoded.image, input_size=size, preprocessing=preprocessing)
            )
            good.append(position)
        except FileNotFoundError:
            reasons.append(f"{uuid}: no image {path.name}")
        except Exception as exc:  # any unreadable image is a row of nulls, never a crash
            reasons.append(f"{uuid}: {type(exc).__name__}: {exc}")
    if inputs:
        outputs = _worker["heads"].invoke_heads(np.concatenate(inputs))
        ranked = np.argsort(-outputs[CATEGORY_HEAD], axis=1)
        present = outputs[TAGS_HEAD] >= np.asarray(_worker["thresholds"])[np.newaxis, :]
        labels = _worker["labels"]
        for row_index, position in enumerate(good):
            rows[position]["category1"] = labels[ranked[row_index, 0]]
            rows[position]["category2"] = labels[ranked[row_index, 1]]
            for column, tag in enumerate(TAGS):
                rows[position][tag] = int(present[row_index, column])
    return index, rows, reasons


# --- In the parent ---------------------------------------------------------------------------


def _manifest(*, input_path: Path, model_version: ModelVersion, chunk_size: int) -> dict:
    return {
        "input_sha256": hashlib.sha256(Path(input_path).read_bytes()).hexdigest(),
        "model": f"{model_version.name} v{model_version.version}",
        "artifact_sha256": model_version.artifact_sha256,
        "chunk_size": chunk_size,
    }


def _part_path(parts_dir: Path, index: int) -> Path:
    return parts_dir / f"part-{index:06d}.parquet"


def _table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=PREDICTION_SCHEMA)


def predictions_validate(*, path: Path, uuids: list[str]) -> None:
    """Raise TrainingError unless ``path`` has exactly the output columns and types, one row per
    uuid in the order of ``uuids``."""
    table = pq.read_table(path)
    if table.schema.names != PREDICTION_COLUMNS:
        raise TrainingError(
            f"{path} has the columns {table.schema.names}, not {PREDICTION_COLUMNS}."
        )
    if not table.schema.equals(PREDICTION_SCHEMA):
        raise TrainingError(f"{path} has the schema {table.schema}, not {PREDICTION_SCHEMA}.")
    if table.column("uuid").to_pylist() != uuids:
        raise TrainingError(f"{path}'s rows are not the input's uuids in their order.")


def predictions_batch(
    *,
    input_path: Path,
    images_dir: Path,
    output_path: Path,
    model_version: ModelVersion,
    workers: int = 2,
    chunk_size: int = 64,
    progress: bool = True,
    on_chunk: Callable[[int], None] | None = None,
    shard: tuple[int, int] = (0, 1),
) -> BatchReport:
    """Predict every uuid of ``input_path`` into ``output_path`` (exact columns, input order).

    Resumable: finished chunks are kept in ``<output>.parts/`` until the output is written; a
    rerun with the same input, model and chunk size predicts only the missing chunks (another
    input or model refuses to mix with them: TrainingError). ``on_chunk`` is called with each
    finished chunk's index. Raises DatasetError for a bad input file.

    ``shard`` (index, count) with a count above 1 predicts only the chunks whose number is
    ``index`` modulo ``count`` into the shared parts folder, and writes no output: several
    processes or pods (a Kubernetes Indexed Job) share the input that way, and a last run
    without a shard, finding every chunk done, writes the output.
    """
    shard_index, shard_count = shard
    if not 0 <= shard_index < shard_count:
        raise TrainingError(f"Shard {shard_index} of {shard_count} does not exist.")
    uuids = uuids_read(path=input_path)
    if not Path(images_dir).is_dir():
        raise TrainingError(f"The images folder {images_dir} does not exist.")
    output_path = Path(output_path)
    parts_dir = output_path.with_name(output_path.name + ".parts")
    manifest = _manifest(input_path=input_path, model_version=model_version, chunk_size=chunk_size)
    if parts_dir.exists():
        stored = (
            json.loads((parts_dir / MANIFEST).read_text())
            if (parts_dir / MANIFEST).exists()
            else {}
        )
        if stored != manifest:
            raise TrainingError(
                f"{parts_dir} holds the unfinished run of another input, model or chunk size "
                f"({stored.get('model')}); delete it to start afresh."
            )
    else:
        # Shards starting together: each may create the folder; the manifests are identical.
        parts_dir.mkdir(parents=True, exist_ok=True)
        written = parts_dir / f"{MANIFEST}.{shard_index}.tmp"
        written.write_text(json.dumps(manifest))
        written.replace(parts_dir / MANIFEST)

    chunks = [uuids[start : start + chunk_size] for start in range(0, len(uuids), chunk_size)]
    mine = [i for i in range(len(chunks)) if i % shard_count == shard_index]
    todo = [i for i in mine if not _part_path(parts_dir, i).exists()]
    skipped = sum(len(chunks[i]) for i in mine if i not in set(todo))
    if skipped:
        logger.info("Resuming: %d of %d rows were finished before", skipped, len(uuids))
    content = artifact_read_verified(
        name=model_version.artifact, sha256=model_version.artifact_sha256
    )
    version_settings = {
        "input_size": model_version.input_size,
        "preprocessing": dict(model_version.preprocessing),
        "labels": list(model_version.labels),
        "thresholds": list(model_version.tag_thresholds or [0.5] * len(TAGS)),
        "max_pixels": settings.IMAGE_MAX_PIXELS,
    }
    if list(model_version.tag_labels or []) != TAGS:
        raise TrainingError(f"{model_version} tags {model_version.tag_labels}, not {TAGS}.")

    started = time.perf_counter()
    predicted = failed = 0
    bar = tqdm(total=len(uuids), initial=skipped, unit="img", disable=not progress)
    tasks = [(i, chunks[i], str(images_dir)) for i in todo]
    # Fork: the workers need nothing but the flat buffer and the version's settings.
    context = multiprocessing.get_context("fork")
    with context.Pool(max(1, workers), _worker_start, (content, version_settings)) as pool:
        for index, rows, reasons in pool.imap_unordered(_chunk_predict, tasks):
            for reason in reasons:
                logger.warning("Null row: %s", reason)
            part = _part_path(parts_dir, index)
            temporary = part.with_suffix(f".{shard_index}.tmp")
            pq.write_table(_table(rows), temporary)
            temporary.replace(part)  # a part exists only once complete
            predicted += len(rows)
            failed += len(reasons)
            bar.update(len(rows))
            if on_chunk is not None:
                on_chunk(index)
    bar.close()
    seconds = time.perf_counter() - started
    if shard_count > 1:  # this shard's parts are written; a run without a shard assembles
        return BatchReport(
            rows=sum(len(chunks[i]) for i in mine),
            predicted=predicted,
            skipped=skipped,
            failed=failed,
            seconds=seconds,
            output_path=output_path,
        )

    parts = [pq.read_table(_part_path(parts_dir, i)) for i in range(len(chunks))]
    table = pa.concat_tables(parts) if parts else _table([])
    temporary = output_path.with_name(output_path.name + ".tmp")
    pq.write_table(table.cast(PREDICTION_SCHEMA), temporary)
    temporary.replace(output_path)
    predictions_validate(path=output_path, uuids=uuids)
    shutil.rmtree(parts_dir)
    return BatchReport(
        rows=len(uuids),
        predicted=predicted,
        skipped=skipped,
        failed=failed,
        seconds=seconds,
        output_path=output_path,
    )
