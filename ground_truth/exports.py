"""Feedback as training data: what users said was right, written in the formats the training
and evaluation commands read.

- ``parquet`` (multi-task models): the training app's data format (``training.dataset``):
  ``data.parquet`` (``uuid``, ``cc3`` the category, ``color1`` unknown, one 0/1 column per tag)
  and ``images/<uuid>.jpg``, so ``train_garment_model --data DIR`` reads it unchanged; beside
  them ``labels.json``, the model's categories and tags, which training checks before it
  concatenates data sets. The uuid is the image's SHA-256.
- ``folder`` (any kind): ``<label>/<sha256>.<ext>``, the layout ``evaluate_model --images``
  reads, with ``manifest.csv`` as its ``--labels`` (``file,label,tags`` first).

Both write ``manifest.csv``: where each row came from (request id, version, review, source).
Only trusted feedback is exported (pending too on request; rejected never). Each image is the
one kept with the feedback (under FEEDBACK_IMAGE_DIR, until it expires), else the request's
image URL fetched again through the guarded fetcher and kept only if it is still the answered
image (same SHA-256); a row with neither is skipped, and counted by reason.
"""

import csv
import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone
from PIL import Image, UnidentifiedImageError

from classification.intake.fetching import image_fetch
from classification.models import ModelVersion
from classification.selectors import model_version_newest, model_version_production
from core.errors import ServiceError
from ground_truth.models import Feedback
from training.dataset import LABELS_FILE, image_path

FORMATS = ("parquet", "folder")
MANIFEST_FILE = "manifest.csv"
# The folder format's file suffix per image format (what evaluate_model's reader looks for).
_SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp"}
# A label as a folder name: anything that could leave the folder or trip a shell becomes "_"
# (manifest.csv keeps the label itself).
_UNSAFE_IN_FOLDER = re.compile(r"[^\w .,'()+-]")


class ExportError(Exception):
    """The export cannot run as asked (unknown model, a format its kind lacks, a used folder,
    nothing to export)."""


@dataclass
class ExportSummary:
    """What an export wrote, and what it skipped and why."""

    output_dir: Path
    export_format: str
    considered: int = 0  # feedback rows read
    exported: int = 0  # rows written (one per image, or per image and label)
    sources: Counter = field(default_factory=Counter)  # "kept" / "fetched" -> rows
    skipped: Counter = field(default_factory=Counter)  # reason -> rows

    def line(self) -> str:
        """One sentence for the command's output."""
        sources = ", ".join(f"{count} {source}" for source, count in sorted(self.sources.items()))
        text = (
            f"Exported {self.exported} of {self.considered} feedback rows to {self.output_dir} "
            f"({self.export_format}" + (f"; images: {sources}" if sources else "") + ")"
        )
        if self.skipped:
            skipped = sorted(self.skipped.items())
            reasons = ", ".join(f"{count} {reason}" for reason, count in skipped)
            text += f"; skipped {sum(self.skipped.values())}: {reasons}"
        return text + "."


@dataclass(frozen=True)
class _Row:
    feedback: Feedback
    label: str
    tags: list[str] | None  # multi-task: the tags present; None for other kinds
    data: bytes
    sha256: str
    suffix: str  # of its format: ".jpg", ".png", ...
    source: str  # "kept" or "fetched"


def feedback_exportable(
    *, name: str, version: int | None = None, include_pending: bool = False
) -> QuerySet[Feedback]:
    """The feedback an export of model ``name`` (one ``version`` of it, or all) considers:
    trusted (and pending with ``include_pending``), newest first, so that where two rows
    speak of one image the latest word wins."""
    reviews = [Feedback.Review.TRUSTED]
    if include_pending:
        reviews.append(Feedback.Review.PENDING)
    feedback = Feedback.objects.filter(model_version__name=name, review__in=reviews)
    if version is not None:
        feedback = feedback.filter(model_version__version=version)
    return feedback.select_related("request_log", "model_version").order_by("-updated_at", "-id")


def _tag_names(value: Any) -> list[str] | None:
    """Tags as stored: a list of labels present, or the answer's [{"label", "present"}, ...]."""
    if not isinstance(value, list):
        return None
    names = []
    for item in value:
        if isinstance(item, str):
            names.append(item)
        elif isinstance(item, dict) and isinstance(item.get("label"), str):
            if item.get("present", True):
                names.append(item["label"])
        else:
            return None
    return names


def _true_tags(feedback: Feedback) -> list[str] | None:
    """The tags the caller says the image has; the answered ones when the caller called the
    answer right and said nothing of its tags. None: unknown."""
    if feedback.tags is not None:
        return _tag_names(feedback.tags)
    if not feedback.correct:
        return None
    answered = feedback.predicted_tags
    if answered is None:
        answered = feedback.request_log.tags
    return _tag_names(answered)


def _kept_image(feedback: Feedback) -> bytes | None:
    """The image kept with the feedback, if it is still kept and lies in FEEDBACK_IMAGE_DIR."""
    if not feedback.image:
        return None
    if feedback.image_expires_at is not None and feedback.image_expires_at <= timezone.now():
        return None  # past its retention: not to be used, even before it is deleted
    root = Path(settings.FEEDBACK_IMAGE_DIR).resolve()
    path = (root / feedback.image).resolve()
    if not path.is_relative_to(root):
        return None
    try:
        return path.read_bytes()
    except OSError:
        return None


def _image(feedback: Feedback) -> tuple[bytes, str, str] | str:
    """(bytes, SHA-256, source) of the answered image, or the reason there is none."""
    expected = feedback.request_log.image_sha256
    data = _kept_image(feedback)
    source = "kept"
    if data is None:
        if not feedback.request_log.image_url:
            return "no image"
        try:
            data = image_fetch(url=feedback.request_log.image_url).data
        except ServiceError as exc:
            return f"image URL failed ({exc.code})"
        source = "fetched"
    sha256 = hashlib.sha256(data).hexdigest()
    if expected and sha256 != expected:
        # The label is about the answered image: another one now at that URL is not labelled.
        return "image changed" if source == "fetched" else "kept image differs"
    return data, sha256, source


def _suffix(data: bytes) -> str | None:
    """The file suffix of the image's format (its header read, not the whole image)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return _SUFFIXES.get(image.format or "")
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def _rows(
    feedback: QuerySet[Feedback], *, reference: ModelVersion, summary: ExportSummary
) -> Iterator[_Row]:
    """Each usable feedback row once per image (and label, in folders), its image in hand."""
    multi_task = reference.kind == ModelVersion.Kind.MULTI_TASK
    # A zero-shot version's labels are those of each request, so any label is one.
    known = None if reference.kind == ModelVersion.Kind.ZERO_SHOT else set(reference.labels)
    known_tags = set(reference.tag_labels or [])
    by_image = summary.export_format == "parquet"
    seen: set[tuple[str, str]] = set()
    for row in feedback.iterator(chunk_size=500):
        summary.considered += 1
        if known is not None and row.label not in known:
            summary.skipped["label not in the model's labels"] += 1
            continue
        tags = _true_tags(row) if multi_task else None
        if multi_task and tags is None:
            summary.skipped["tags unknown"] += 1
            continue
        if tags is not None and not set(tags) <= known_tags:
            summary.skipped["tag not in the model's tags"] += 1
            continue
        # Seen before the image is fetched when the answer's hash is known.
        sha256 = row.request_log.image_sha256
        key = (sha256, "" if by_image else row.label)
        if sha256 and key in seen:
            summary.skipped["older feedback on the same image"] += 1
            continue
        found = _image(row)
        if isinstance(found, str):
            summary.skipped[found] += 1
            continue
        data, sha256, source = found
        key = (sha256, "" if by_image else row.label)
        if key in seen:
            summary.skipped["older feedback on the same image"] += 1
            continue
        suffix = _suffix(data)
        if suffix is None:
            summary.skipped["not an image of a known format"] += 1
            continue
        seen.add(key)
        summary.sources[source] += 1
        yield _Row(
            feedback=row,
            label=row.label,
            tags=tags,
            data=data,
            sha256=sha256,
            suffix=suffix,
            source=source,
        )


def _manifest_write(path: Path, *, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _provenance(row: _Row) -> list[str]:
    feedback = row.feedback
    return [
        feedback.request_log.request_id,
        f"{feedback.model_version.name} v{feedback.model_version.version}",
        feedback.review,
        row.source,
    ]


_PROVENANCE = ["request_id", "model_version", "review", "source"]


def _images_write(rows: Iterator[_Row], *, output_dir: Path, export_format: str) -> list[_Row]:
    """Write each row's image as it comes (one image in memory at a time); return the rows,
    without their bytes."""
    written = []
    for row in rows:
        if export_format == "parquet":
            # The bytes as answered, whatever their format: training decodes by content, as
            # serving did, so it sees the pixels the model was judged on.
            path = image_path(images_dir=output_dir / "images", uuid=row.sha256)
        else:
            path = output_dir / _label_folder(row.label) / f"{row.sha256}{row.suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(row.data)
        written.append(replace(row, data=b""))
    return written


def _parquet_write(rows: list[_Row], *, output_dir: Path, reference: ModelVersion) -> None:
    tag_labels = list(reference.tag_labels or [])
    columns: dict[str, pa.Array] = {
        "uuid": pa.array([row.sha256 for row in rows], pa.string()),
        "cc3": pa.array([row.label for row in rows], pa.string()),
        "color1": pa.array([None] * len(rows), pa.string()),  # feedback does not say
    }
    for tag in tag_labels:
        columns[tag] = pa.array([int(tag in (row.tags or ())) for row in rows], pa.int64())
    pq.write_table(pa.table(columns), output_dir / "data.parquet")
    (output_dir / LABELS_FILE).write_text(
        json.dumps({"categories": list(reference.labels), "tags": tag_labels}, indent=1) + "\n",
        encoding="utf-8",
    )
    _manifest_write(
        output_dir / MANIFEST_FILE,
        header=["uuid", *_PROVENANCE],
        rows=[[row.sha256, *_provenance(row)] for row in rows],
    )


def _label_folder(label: str) -> str:
    name = _UNSAFE_IN_FOLDER.sub("_", label).strip(" .")
    return name or "_"


def _folder_manifest_write(rows: list[_Row], *, output_dir: Path) -> None:
    _manifest_write(
        output_dir / MANIFEST_FILE,
        header=["file", "label", "tags", *_PROVENANCE],
        rows=[
            [
                f"{_label_folder(row.label)}/{row.sha256}{row.suffix}",
                row.label,
                ";".join(row.tags) if row.tags is not None else "",
                *_provenance(row),
            ]
            for row in rows
        ],
    )


def feedback_export(
    *,
    name: str,
    output_dir: Path,
    export_format: str = "parquet",
    version: int | None = None,
    include_pending: bool = False,
) -> ExportSummary:
    """Export the trusted feedback on model ``name`` (all its versions, or ``version``) into
    ``output_dir`` (new or empty) as ``export_format`` (``parquet``: multi-task models only;
    ``folder``: any). Labels are checked against ``version``, else the production version,
    else the newest. Returns what was written and skipped; raises ExportError when the export
    cannot run or nothing could be exported.
    """
    if export_format not in FORMATS:
        raise ExportError(f"Unknown format {export_format!r}: one of {', '.join(FORMATS)}.")
    reference = (
        ModelVersion.objects.filter(name=name, version=version).first()
        if version is not None
        else model_version_production(name=name) or model_version_newest(name=name)
    )
    if reference is None:
        which = f"{name} v{version}" if version is not None else name
        raise ExportError(f"No model {which} is registered.")
    if export_format == "parquet" and reference.kind != ModelVersion.Kind.MULTI_TASK:
        raise ExportError(
            f"{name} is a {reference.kind} model: the parquet format is the multi-task "
            "training data (category and tags); use --format folder."
        )
    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise ExportError(f"{output_dir} is not an empty folder: export into a new one.")
    summary = ExportSummary(output_dir=output_dir, export_format=export_format)
    feedback = feedback_exportable(name=name, version=version, include_pending=include_pending)
    output_dir.mkdir(parents=True, exist_ok=True)
    rows = _images_write(
        _rows(feedback, reference=reference, summary=summary),
        output_dir=output_dir,
        export_format=export_format,
    )
    if not rows:
        raise ExportError(f"Nothing to export. {summary.line()}")
    if export_format == "parquet":
        _parquet_write(rows, output_dir=output_dir, reference=reference)
    else:
        _folder_manifest_write(rows, output_dir=output_dir)
    summary.exported = len(rows)
    return summary
