"""JPEG draft decoding against the full decode, on labelled photos at camera size.

A version may record a ``jpeg_draft_margin`` in its preprocessing (``jpeg_draft_size``): the
margin its draft decoding was validated with. This is how it is validated
(``evaluate_model --draft``): every labelled photo the version can be judged on is upscaled
(LANCZOS) to a camera's size (4032 pixels on the longer side: 12 MP at 4:3) and re-encoded as
JPEG quality 90; each stand-in then goes through the service's path
(``serving_model_scores``) once decoded whole and once per draft variant (a margin, and
optionally Pillow's ``reducing_gap`` in the final resize). Upscaled photos are smoother than a
camera's, which favours the draft decode: a margin validated this way is an upper bound on
what camera photos keep.

Per variant: top-1 and top-5 accuracy, top-1 agreement with the full decode and the CPU time
(process time: decode, preprocessing and invoke) per photo. The rule a version's recipe must
pass to record a margin (``DRAFT_RULE``): on at least 1,000 labelled photos, top-1 and top-5
within 0.5 points of the full decode, and the top-1 answer unchanged on at least 98% of them.
"""

import dataclasses
import io
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from PIL import Image, ImageOps

from classification.evaluation import (
    EvaluationError,
    LabelledImage,
    LabelledSet,
    Progress,
    judged_images,
)
from classification.serving.engine import ServingModel
from classification.serving.imaging import DRAFT_MARGIN_OPTION
from classification.serving.services import serving_model_scores
from core.errors import ServiceError

CAMERA_LONGER_SIDE = 4032  # a 12-MP phone camera's 4032 x 3024
CAMERA_JPEG_QUALITY = 90
DRAFT_RULE = {"min_photos": 1000, "max_accuracy_drop": 0.005, "min_top1_agreement": 0.98}


@dataclass(frozen=True)
class DecodeVariant:
    """How a photo is decoded and resized: the full decode, or drafted with ``margin``."""

    margin: float | None = None  # None: decoded whole
    reducing_gap: float | None = None

    @property
    def name(self) -> str:
        name = "full" if self.margin is None else f"draft {self.margin:g}"
        return name if self.reducing_gap is None else f"{name}, reducing_gap {self.reducing_gap:g}"

    def preprocessing(self, recorded: dict) -> dict:
        """``recorded`` (the version's) with this variant's margin and gap instead."""
        options = {k: v for k, v in recorded.items() if k not in (DRAFT_MARGIN_OPTION,)}
        if self.margin is not None:
            options[DRAFT_MARGIN_OPTION] = self.margin
        if self.reducing_gap is not None:
            options["reducing_gap"] = self.reducing_gap
        return options


FULL = DecodeVariant()


@dataclass(frozen=True)
class Decoded:
    ranked: list[int]  # the top 5 indices
    cpu_seconds: float
    error: str | None = None


@dataclass
class DraftComparison:
    set_name: str
    model_name: str
    model_version: int
    longer_side: int
    variants: list[DecodeVariant]
    truths: list[frozenset[int]]  # per photo
    results: dict[str, list[Decoded]]  # variant name -> per photo

    def figures(self, variant: DecodeVariant) -> dict:
        """Accuracies, agreement with the full decode and CPU ms per photo for ``variant``."""
        results, full = self.results[variant.name], self.results[FULL.name]
        photos = len(self.truths)

        def accuracy(decoded: list[Decoded], k: int) -> float:
            pairs = zip(decoded, self.truths, strict=True)
            hits = sum(bool(set(d.ranked[:k]) & truth) for d, truth in pairs)
            return hits / photos if photos else 0.0

        agreement = sum(
            bool(d.ranked and f.ranked and d.ranked[0] == f.ranked[0])
            for d, f in zip(results, full, strict=True)
        )
        return {
            "variant": variant.name,
            "photos": photos,
            "top1": round(accuracy(results, 1), 4),
            "top5": round(accuracy(results, 5), 4),
            "top1_agreement": round(agreement / photos, 4) if photos else 0.0,
            "cpu_ms": round(statistics.mean(d.cpu_seconds for d in results) * 1000, 1),
            "refused": sum(d.error is not None for d in results),
        }

    def passes(self, variant: DecodeVariant) -> tuple[bool, list[str]]:
        """Whether ``variant`` passes DRAFT_RULE against the full decode, and why not."""
        mine, full = self.figures(variant), self.figures(FULL)
        reasons = []
        if mine["photos"] < DRAFT_RULE["min_photos"]:
            reasons.append(f"{mine['photos']} labelled photos, fewer than 1,000")
        for key in ("top1", "top5"):
            # Rounded: a drop of exactly 0.5 points (1 photo in 200) is within the rule.
            if round(full[key] - mine[key], 6) > DRAFT_RULE["max_accuracy_drop"]:
                reasons.append(f"{key} {full[key]:.1%} -> {mine[key]:.1%}")
        if mine["top1_agreement"] < DRAFT_RULE["min_top1_agreement"]:
            reasons.append(f"top-1 agreement {mine['top1_agreement']:.1%} < 98%")
        return not reasons, reasons


def camera_size_jpeg(
    data: bytes, *, longer_side: int = CAMERA_LONGER_SIDE, quality: int = CAMERA_JPEG_QUALITY
) -> bytes:
    """``data`` upright, upscaled (LANCZOS) to ``longer_side`` and encoded as a JPEG."""
    with Image.open(io.BytesIO(data)) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    ratio = longer_side / max(image.size)
    size = (max(1, round(image.width * ratio)), max(1, round(image.height * ratio)))
    upscaled = image.resize(size, resample=Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    upscaled.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def draft_variants(
    margins: Iterable[float], reducing_gaps: Iterable[float] = ()
) -> list[DecodeVariant]:
    """The full decode and each margin, then each of those with each reducing gap."""
    plain = [FULL, *(DecodeVariant(margin=float(m)) for m in margins)]
    gapped = [
        DecodeVariant(margin=v.margin, reducing_gap=float(gap))
        for gap in reducing_gaps
        for v in plain
    ]
    return plain + gapped


def _decoded(model: ServingModel, data: bytes) -> Decoded:
    started = time.process_time()
    try:
        scores = serving_model_scores(model=model, image_bytes=data)
    except ServiceError as exc:
        return Decoded(ranked=[], cpu_seconds=time.process_time() - started, error=exc.code)
    cpu = time.process_time() - started
    ranked = [int(i) for i in np.argsort(-scores.probabilities, kind="stable")[:5]]
    return Decoded(ranked=ranked, cpu_seconds=cpu)


def draft_compare(
    *,
    model: ServingModel,
    labelled: LabelledSet,
    variants: list[DecodeVariant],
    longer_side: int = CAMERA_LONGER_SIDE,
    limit: int | None = None,
    progress: Progress | None = None,
) -> DraftComparison:
    """Every photo of ``labelled`` that ``model`` (a classifier) can be judged on, at camera
    size, through the service's path once per variant (the first must be the full decode)."""
    if not settings.IMAGE_JPEG_DRAFT:
        raise EvaluationError("IMAGE_JPEG_DRAFT is off: draft variants would decode whole.")
    if not variants or variants[0] != FULL:
        raise EvaluationError("The first variant must be the full decode.")
    judged = judged_images(labelled, model=model, labels=list(model.labels), limit=limit)
    models = {
        v.name: dataclasses.replace(model, preprocessing=v.preprocessing(model.preprocessing))
        for v in variants
    }
    results: dict[str, list[Decoded]] = {v.name: [] for v in variants}
    by_name = dict((image.name, truth) for image, truth in judged)
    images: Iterable[LabelledImage] = [image for image, _ in judged]
    if progress is not None:
        images = progress(images, total=len(judged))
    truths = []
    for image in images:
        data = camera_size_jpeg(image.path.read_bytes(), longer_side=longer_side)
        truths.append(by_name[image.name])
        for variant in variants:
            results[variant.name].append(_decoded(models[variant.name], data))
    return DraftComparison(
        set_name=labelled.name,
        model_name=model.name,
        model_version=model.version,
        longer_side=longer_side,
        variants=variants,
        truths=truths,
        results=results,
    )


def draft_comparisons_merged(comparisons: list[DraftComparison]) -> DraftComparison:
    """Several sets' comparisons of one version with the same variants, as one."""
    first = comparisons[0]
    results: dict[str, list[Decoded]] = {v.name: [] for v in first.variants}
    truths: list[frozenset[int]] = []
    for comparison in comparisons:
        truths += comparison.truths
        for name in results:
            results[name] += comparison.results[name]
    return dataclasses.replace(
        first,
        set_name=" + ".join(c.set_name for c in comparisons),
        truths=truths,
        results=results,
    )
