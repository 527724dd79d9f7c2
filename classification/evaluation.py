"""How well a registered version answers on labelled photos, through the service's own path.

A labelled set is a folder of images whose labels come from a CSV (``file,label[,tags]``) or
from their names: an ImageNet-style file or folder name holds a WordNet id (``n01440764``),
which the ImageNet-1k table (``data/imagenet1k_classes.tsv``) turns into a class. Each image
runs through ``serving_model_scores``, the decode, preprocessing and invocation of every
request, so the figures are the service's, not those of a separate pipeline.

What is measured depends on the version's kind:

- ``classifier``: top-1 and top-5 accuracy over the images whose label is one of the version's;
- ``multi_task``: top-1 and top-2 accuracy, and the F1 of each tag (at the version's tuned
  thresholds) with their mean, over the images whose tags the CSV gives;
- ``zero_shot``: top-1 and top-5 accuracy over the set's own labels, scored as per-request
  labels are.

``evaluate`` returns every image's outcome (``EvaluationReport``), so other figures, such as a
quantized version's agreement with its float source, can be computed from two reports.
"""

import csv
import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import numpy as np

from classification.models import ModelVersion
from classification.registry.services import model_version_evaluation_store
from classification.serving.engine import ServingModel, serving_model_load
from classification.serving.services import serving_model_scores
from core.errors import ServiceError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp"})
IMAGENET_CLASSES_PATH = Path(__file__).resolve().parent / "data" / "imagenet1k_classes.tsv"
IMAGENET_CLASSES = 1000
WORDNET_ID = re.compile(r"(?<![0-9a-z])n\d{8}(?!\d)")
# Tags in a CSV's third column are separated by this.
TAG_SEPARATOR = ";"
TOP_K = {"classifier": 5, "multi_task": 2, "zero_shot": 5}


class EvaluationError(ValueError):
    """The labelled set cannot be read or has nothing the version can be evaluated on."""


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    name: str  # relative to the set's folder, with forward slashes
    label: str  # as given: a WordNet id or a label
    tags: frozenset[str] | None = None  # a multi-task image's true tags, when given


@dataclass(frozen=True)
class LabelledSet:
    name: str  # what the figures are stored under
    images: list[LabelledImage]
    unlabelled: int = 0  # image files for which no label was found


@lru_cache(maxsize=1)
def imagenet_classes() -> list[tuple[str, str]]:
    """ImageNet-1k in the order of its 1000 outputs: (WordNet id, the class's names)."""
    rows = []
    for line in IMAGENET_CLASSES_PATH.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            wordnet_id, names = line.split("\t", 1)
            rows.append((wordnet_id, names))
    return rows


@lru_cache(maxsize=1)
def _imagenet_index() -> dict[str, int]:
    return {wordnet_id: index for index, (wordnet_id, _) in enumerate(imagenet_classes())}


def imagenet_class_name(wordnet_id: str) -> str | None:
    """The first name of ImageNet-1k's class ``wordnet_id`` ("tabby"), None if none."""
    index = _imagenet_index().get(wordnet_id)
    return None if index is None else imagenet_classes()[index][1].split(",")[0].strip()


def _normalised(label: str) -> str:
    return " ".join(label.replace("_", " ").casefold().split())


def truth_indices(label: str, *, labels: list[str]) -> frozenset[int]:
    """The indices of ``labels`` that ``label`` (a WordNet id or a label) names; empty: none.

    A WordNet id names its ImageNet-1k index in a version of 1000 labels (ImageNet's output
    order), elsewhere the labels equal to its class's first name; a label names the labels
    equal to it, ignoring case and underscores (ImageNet's two cranes are both "crane").
    """
    if WORDNET_ID.fullmatch(label):
        if len(labels) == IMAGENET_CLASSES and label in _imagenet_index():
            return frozenset({_imagenet_index()[label]})
        name = imagenet_class_name(label)
        if name is None:
            return frozenset()
        label = name
    wanted = _normalised(label)
    return frozenset(index for index, name in enumerate(labels) if _normalised(name) == wanted)


def _label_from_name(name: str) -> str | None:
    """The WordNet id in an image's path: the file name's first, else the nearest folder's."""
    for part in reversed(name.split("/")):
        found = WORDNET_ID.search(part)
        if found:
            return found.group(0)
    return None


def _image_files(images_dir: Path) -> list[Path]:
    return sorted(
        path
        for path in images_dir.rglob("*")
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
    )


def _csv_rows(labels_csv: Path) -> list[list[str]]:
    try:
        with labels_csv.open(newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EvaluationError(f"Cannot read {labels_csv}: {exc}") from exc
    if rows and rows[0][0].strip().casefold() in ("file", "path", "filename", "image"):
        rows = rows[1:]  # a header
    for number, row in enumerate(rows, start=1):
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise EvaluationError(f"{labels_csv}, row {number}: expected file,label[,tags].")
    return rows


def labelled_set_read(
    *, images_dir: Path, labels_csv: Path | None = None, name: str | None = None
) -> LabelledSet:
    """The labelled images of ``images_dir``: those the CSV lists, or those whose path holds a
    WordNet id (the others are counted as unlabelled). Named ``name`` or after the folder."""
    if not images_dir.is_dir():
        raise EvaluationError(f"{images_dir} is not a folder.")
    set_name = name or images_dir.resolve().name
    if labels_csv is None:
        images, unlabelled = [], 0
        for path in _image_files(images_dir):
            relative = path.relative_to(images_dir).as_posix()
            label = _label_from_name(relative)
            if label is None:
                unlabelled += 1
            else:
                images.append(LabelledImage(path=path, name=relative, label=label))
        return LabelledSet(name=set_name, images=images, unlabelled=unlabelled)
    images = []
    for row in _csv_rows(labels_csv):
        relative = row[0].strip()
        path = images_dir / relative
        if not path.is_file():
            raise EvaluationError(f"{labels_csv} lists {relative}, which {images_dir} lacks.")
        tags = None
        if len(row) > 2:
            tags = frozenset(tag.strip() for tag in row[2].split(TAG_SEPARATOR) if tag.strip())
        images.append(LabelledImage(path=path, name=relative, label=row[1].strip(), tags=tags))
    return LabelledSet(name=set_name, images=images)


@dataclass(frozen=True)
class ImageOutcome:
    """What the version answered for one labelled image."""

    name: str
    label: str  # as given
    truth: frozenset[int]  # indices of the report's labels that are right
    ranked: list[int]  # the report's TOP_K best indices, best first; empty when refused
    confidences: list[float]  # their probabilities
    true_tags: frozenset[str] | None = None
    present_tags: frozenset[str] | None = None  # tags at or above their threshold
    error: str | None = None  # the service's error code when it refused the image

    def correct(self, k: int) -> bool:
        return any(index in self.truth for index in self.ranked[:k])


@dataclass
class EvaluationReport:
    set_name: str
    model_name: str
    model_version: int
    kind: str
    labels: list[str]  # what the outcomes' indices refer to
    outcomes: list[ImageOutcome]
    not_in_labels: int = 0  # labelled images whose label is none of the version's
    unlabelled: int = 0
    tag_labels: list[str] = field(default_factory=list)
    preprocessing: dict = field(default_factory=dict)

    @property
    def evaluated(self) -> list[ImageOutcome]:
        return [outcome for outcome in self.outcomes if outcome.error is None]

    def accuracy(self, k: int) -> float:
        """Share of the images (refused ones count as wrong) with a right label in the top k."""
        if not self.outcomes:
            return 0.0
        return sum(outcome.correct(k) for outcome in self.outcomes) / len(self.outcomes)

    def figures(self) -> dict:
        """The figures stored in the version's metrics: accuracies, counts and the set."""
        figures: dict = {
            "set": self.set_name,
            "images": len(self.outcomes),
            "refused": len(self.outcomes) - len(self.evaluated),
            "not_in_labels": self.not_in_labels,
            "unlabelled": self.unlabelled,
            "top1_accuracy": round(self.accuracy(1), 6),
        }
        second = TOP_K[self.kind]
        figures[f"top{second}_accuracy"] = round(self.accuracy(second), 6)
        evaluated = self.evaluated
        if evaluated:
            figures["mean_top1_confidence"] = round(
                float(np.mean([outcome.confidences[0] for outcome in evaluated])), 6
            )
        if self.kind == ModelVersion.Kind.ZERO_SHOT:
            figures["labels"] = len(self.labels)
        if self.kind == ModelVersion.Kind.MULTI_TASK:
            figures.update(self._tag_figures())
        figures["preprocessing"] = dict(self.preprocessing)
        figures["evaluated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        return figures

    def _tag_figures(self) -> dict:
        tagged = [o for o in self.evaluated if o.true_tags is not None]
        if not tagged:
            return {}
        per_tag = {}
        for tag in self.tag_labels:
            true = np.array([tag in (o.true_tags or ()) for o in tagged])
            predicted = np.array([tag in (o.present_tags or ()) for o in tagged])
            tp = int(np.sum(true & predicted))
            fp, fn = int(np.sum(~true & predicted)), int(np.sum(true & ~predicted))
            f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
            per_tag[tag] = {"f1": round(f1, 6), "support": int(true.sum())}
        return {
            "tagged_images": len(tagged),
            "tag_f1": per_tag,
            "tag_macro_f1": round(float(np.mean([t["f1"] for t in per_tag.values()])), 6),
        }


Progress = Callable[..., Iterable[LabelledImage]]


def _limited(images: list[LabelledImage], limit: int | None) -> list[LabelledImage]:
    """At most ``limit`` images, the same on every run and spread over the set: those whose
    names hash lowest, kept in the set's order."""
    if limit is None or limit >= len(images):
        return images
    ranked = sorted(images, key=lambda image: hashlib.sha256(image.name.encode()).hexdigest())
    chosen = {image.name for image in ranked[:limit]}
    return [image for image in images if image.name in chosen]


def judged_images(
    labelled: LabelledSet, *, model: ServingModel, labels: list[str], limit: int | None
) -> list[tuple[LabelledImage, frozenset[int]]]:
    """The images of ``labelled`` whose label is among ``labels`` (at most ``limit``, the same
    ones on every run), each with its true output indices. Raises EvaluationError if none is."""
    judged = []
    for image in labelled.images:
        truth = truth_indices(image.label, labels=labels)
        if truth:
            judged.append((image, truth))
    kept = {image.name for image in _limited([image for image, _ in judged], limit)}
    judged = [(image, truth) for image, truth in judged if image.name in kept]
    if not judged:
        raise EvaluationError(
            f"None of the {len(labelled.images)} labelled images of {labelled.name} has a "
            f"label of {model.name} v{model.version}."
        )
    return judged


def serving_model_evaluate(
    *,
    model: ServingModel,
    labelled: LabelledSet,
    limit: int | None = None,
    progress: Progress | None = None,
) -> EvaluationReport:
    """Run every image of ``labelled`` that ``model`` can be judged on through the service's
    path; ``progress`` wraps the images' iteration (``tqdm`` fits: called with the images and
    ``total=``). An image the service refuses (undecodable, too large) counts as wrong."""
    zero_shot = model.kind == ModelVersion.Kind.ZERO_SHOT
    labels = _zero_shot_labels(labelled) if zero_shot else list(model.labels)
    if zero_shot:
        model.labels_check(labels)
    judged = judged_images(labelled, model=model, labels=labels, limit=limit)
    not_in_labels = sum(
        1 for image in labelled.images if not truth_indices(image.label, labels=labels)
    )
    truths = {image.name: truth for image, truth in judged}
    images: Iterable[LabelledImage] = [image for image, _ in judged]
    if progress is not None:
        images = progress(images, total=len(judged))
    top_k = TOP_K.get(model.kind, 5)
    outcomes = [
        _outcome(
            model=model,
            image=image,
            truth=truths[image.name],
            top_k=top_k,
            labels=labels if zero_shot else None,
        )
        for image in images
    ]
    return EvaluationReport(
        set_name=labelled.name,
        model_name=model.name,
        model_version=model.version,
        kind=model.kind,
        labels=labels,
        outcomes=outcomes,
        not_in_labels=not_in_labels,
        unlabelled=labelled.unlabelled,
        tag_labels=list(model.tag_labels),
        preprocessing=dict(model.preprocessing),
    )


def _zero_shot_labels(labelled: LabelledSet) -> list[str]:
    """A zero-shot version is scored against the set's own labels, WordNet ids named."""
    names = {
        (imagenet_class_name(image.label) or image.label)
        if WORDNET_ID.fullmatch(image.label)
        else image.label
        for image in labelled.images
    }
    return sorted(names)


def _outcome(
    *,
    model: ServingModel,
    image: LabelledImage,
    truth: frozenset[int],
    top_k: int,
    labels: list[str] | None,
) -> ImageOutcome:
    try:
        scores = serving_model_scores(
            model=model, image_bytes=image.path.read_bytes(), labels=labels
        )
    except ServiceError as exc:
        return ImageOutcome(
            name=image.name,
            label=image.label,
            truth=truth,
            ranked=[],
            confidences=[],
            true_tags=image.tags,
            error=exc.code,
        )
    probabilities = scores.probabilities
    ranked = [int(index) for index in np.argsort(-probabilities, kind="stable")[:top_k]]
    present = None
    if scores.tag_probabilities is not None:
        present = frozenset(
            tag
            for tag, probability, bar in zip(
                model.tag_labels,
                scores.tag_probabilities.tolist(),
                model.tag_thresholds,
                strict=True,
            )
            if probability >= bar
        )
    return ImageOutcome(
        name=image.name,
        label=image.label,
        truth=truth,
        ranked=ranked,
        confidences=[float(probabilities[index]) for index in ranked],
        true_tags=image.tags,
        present_tags=present,
    )


def evaluate(
    version: ModelVersion,
    labelled: LabelledSet,
    *,
    limit: int | None = None,
    progress: Progress | None = None,
    store: bool = True,
) -> EvaluationReport:
    """Load ``version`` (any stage) as serving does, evaluate it on ``labelled`` and, with
    ``store``, record the figures in its metrics under the set's name."""
    model = serving_model_load(version)
    report = serving_model_evaluate(model=model, labelled=labelled, limit=limit, progress=progress)
    if store:
        model_version_evaluation_store(
            model_version=version, set_name=labelled.name, figures=report.figures()
        )
    return report


def evaluation_summary(figures: dict) -> str:
    """One line for people: '745 images of imagen: top-1 88.3%, top-5 97.1%'."""
    accuracies = ", ".join(
        f"top-{key[3:-9]} {value:.1%}"
        for key, value in figures.items()
        if key.startswith("top") and key.endswith("_accuracy")
    )
    line = f"{figures.get('images', 0)} images of {figures.get('set', '?')}: {accuracies}"
    if "tag_macro_f1" in figures:
        line += f", tag F1 {figures['tag_macro_f1']:.3f}"
    return line
