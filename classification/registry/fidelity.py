"""How faithful a quantized version is to its float source, on real photos.

``quantization_fidelity`` runs both versions the way serving runs them (their own
preprocessing, LiteRT, the softmax in float) on the same photos, which must not be those the
quantized version was calibrated on, and reports: top-1 and top-5 of each where the photos are
labelled, how often their top-1 agree (overall and where the float version is confident), and
how far the confidence in the float version's answer moves. ``default_rule`` says whether those
figures let the quantized version answer for its source by default.
"""

import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np

from classification.models import ModelVersion
from classification.registry.photos import Photo
from classification.serving.classifier import ClassifierServable
from classification.serving.imaging import image_preprocess
from classification.store import artifact_read_verified

# The float version's confidence from which its answer is one a user acts on.
CONFIDENT = 0.3
# The quantized version answers by default only within these (against its float source, on
# held-out labelled photos): top-1 points lost, top-1 agreement where confident, mean drift.
MAX_TOP1_LOSS_POINTS = 1.0
MIN_CONFIDENT_AGREEMENT = 0.99
MAX_MEAN_CONFIDENCE_DELTA = 0.03

# Reports measured on labelled photos for int8 files that quantize_model made from the float file
# and the wheel photos: the wheel photos carry no labels, so without these a fresh machine could
# never measure top-1 against float. A record answers for the very files it was measured on, or
# for files that answer as they did on the held-out wheel photos: the conversion is
# deterministic on one machine, but another CPU rounds the float weights' conversion otherwise
# (a different SHA-256 for the same model), and that moves no answer by more than a rounding.
RECORDED_REPORTS = Path(__file__).resolve().parent.parent / "data" / "int8_fidelity.json"


def _servable(model_version: ModelVersion) -> ClassifierServable:
    content = artifact_read_verified(
        name=model_version.artifact, sha256=model_version.artifact_sha256
    )
    return ClassifierServable(model_version=model_version, content=content)


def _probabilities(
    model_version: ModelVersion, servable: ClassifierServable, photo: Photo
) -> np.ndarray:
    batch = image_preprocess(
        image=photo.open_rgb(),
        input_size=model_version.input_size,
        preprocessing=model_version.preprocessing,
    )
    return servable.run(batch)


def _rate(hits: int, total: int) -> float | None:
    return round(hits / total, 4) if total else None


def quantization_fidelity(
    *,
    fp32: ModelVersion,
    int8: ModelVersion,
    photos: Sequence[Photo],
    photo_set: str = "",
) -> dict:
    """The fidelity report of ``int8`` against ``fp32`` on ``photos`` (labels optional, as
    labels or output indices: top-1 and top-5 are measured on the labelled ones only). The two
    versions must have the same labels. ``photo_set`` names the photos in the report."""
    if list(fp32.labels) != list(int8.labels):
        raise ValueError(f"{int8} and {fp32} do not have the same labels.")
    index: dict[str | None, int] = {label: i for i, label in enumerate(fp32.labels)}
    fp32_servable, int8_servable = _servable(fp32), _servable(int8)
    agree = confident = confident_agree = labelled = 0
    top1 = {"fp32": 0, "int8": 0}
    top5 = {"fp32": 0, "int8": 0}
    deltas = []
    for photo in photos:
        reference = _probabilities(fp32, fp32_servable, photo)
        quantized = _probabilities(int8, int8_servable, photo)
        answer = int(np.argmax(reference))
        same = answer == int(np.argmax(quantized))
        agree += same
        if reference[answer] >= CONFIDENT:
            confident += 1
            confident_agree += same
        deltas.append(abs(float(quantized[answer]) - float(reference[answer])))
        truth = photo.label if isinstance(photo.label, int) else index.get(photo.label)
        if truth is not None:
            labelled += 1
            for name, probabilities in (("fp32", reference), ("int8", quantized)):
                ranked = np.argsort(probabilities)[::-1]
                top1[name] += int(ranked[0] == truth)
                top5[name] += int(truth in ranked[:5])
    report: dict = {
        "against": {"name": fp32.name, "version": fp32.version},
        "photo_set": photo_set,
        "photos": len(photos),
        "labelled": labelled,
        "top1_agreement": _rate(agree, len(photos)),
        "confident_threshold": CONFIDENT,
        "confident_photos": confident,
        "confident_top1_agreement": _rate(confident_agree, confident),
        # The confidence in the float version's answer, as each version gives it.
        "mean_abs_confidence_delta": round(float(np.mean(deltas)), 4) if deltas else None,
        "max_abs_confidence_delta": round(float(np.max(deltas)), 4) if deltas else None,
    }
    for name in ("fp32", "int8"):
        report[f"{name}_top1"] = _rate(top1[name], labelled)
        report[f"{name}_top5"] = _rate(top5[name], labelled)
    report["default_rule"] = default_rule(report)
    return report


def default_rule(report: dict) -> dict:
    """Whether a fidelity report lets the quantized version answer by default, and if not why."""
    reasons = []
    if not report["labelled"]:
        reasons.append("no labelled held-out photos: top-1 against the float version unmeasured")
    else:
        loss = 100 * (report["fp32_top1"] - report["int8_top1"])
        if loss > MAX_TOP1_LOSS_POINTS:
            reasons.append(f"top-1 {loss:.1f} points below float (at most {MAX_TOP1_LOSS_POINTS})")
    agreement = report["confident_top1_agreement"]
    if agreement is None:
        reasons.append(f"no photo with float confidence >= {report['confident_threshold']}")
    elif agreement < MIN_CONFIDENT_AGREEMENT:
        reasons.append(
            f"top-1 agrees on {100 * agreement:.1f}% of confident photos "
            f"(at least {100 * MIN_CONFIDENT_AGREEMENT:.0f}%)"
        )
    delta = report["mean_abs_confidence_delta"]
    if delta is None or delta > MAX_MEAN_CONFIDENCE_DELTA:
        reasons.append(f"mean |confidence delta| {delta} (at most {MAX_MEAN_CONFIDENCE_DELTA})")
    return {"passes": not reasons, "reasons": reasons}


# How far a file's confidences on the held-out wheel photos may be from a record's for the record
# to answer for it: far below what another quantization moves (199 calibration samples instead
# of 200 moved one by 0.012 and changed a top-1; 100 samples, 0.022), well above a rounding.
ANSWER_TOLERANCE = 0.004
# The ranks compared: a record's top 5 must be in a file's top 10, each within the tolerance.
ANSWER_RANKS = 5


def held_out_answers(model_version: ModelVersion, photos: Sequence[Photo]) -> dict[str, list]:
    """``model_version``'s top 10 on each of ``photos``: {photo name: [[output index,
    confidence], ...]}, confidences rounded to 6 places. What a record of it keeps to know the
    same model again."""
    servable = _servable(model_version)
    answers = {}
    for photo in photos:
        probabilities = _probabilities(model_version, servable, photo)
        ranked = np.argsort(probabilities)[::-1][: 2 * ANSWER_RANKS]
        answers[photo.name] = [[int(i), round(float(probabilities[i]), 6)] for i in ranked]
    return answers


def answers_match(recorded: dict[str, list], measured: dict[str, list]) -> bool:
    """Whether ``measured`` (held_out_answers of a file) answers as ``recorded`` did: the same
    photos, the same top-1 on each, and each of the record's top 5 among the file's top 10
    within ANSWER_TOLERANCE."""
    if not recorded or set(recorded) != set(measured):
        return False
    for photo, ranked in recorded.items():
        here = {index: confidence for index, confidence in measured[photo]}
        if measured[photo][0][0] != ranked[0][0]:
            return False
        for index, confidence in ranked[:ANSWER_RANKS]:
            if index not in here or abs(here[index] - confidence) > ANSWER_TOLERANCE:
                return False
    return True


@cache
def _recorded_reports() -> tuple[dict, ...]:
    return tuple(json.loads(RECORDED_REPORTS.read_text())["records"])


def fidelity_record(
    *, fp32: ModelVersion, int8: ModelVersion, photos: Sequence[Photo] = ()
) -> tuple[dict, str] | None:
    """The record that answers for these two files, and how it was matched: both SHA-256s
    equal ("the very files"), or, given the held-out wheel ``photos``, both files' answers on
    them as recorded (``answers_match``); None when no record answers for them."""
    records = _recorded_reports()
    for record in records:
        if (record["fp32_sha256"], record["int8_sha256"]) == (
            fp32.artifact_sha256,
            int8.artifact_sha256,
        ):
            return record, "the very files (SHA-256)"
    answered = [record for record in records if record.get("held_out_answers")]
    if not photos or not answered:
        return None
    measured = {"fp32": held_out_answers(fp32, photos), "int8": held_out_answers(int8, photos)}
    for record in answered:
        recorded = record["held_out_answers"]
        if answers_match(recorded["fp32"], measured["fp32"]) and answers_match(
            recorded["int8"], measured["int8"]
        ):
            return record, (
                f"the same answers on the {len(photos)} held-out wheel photos "
                f"(top 5 within {ANSWER_TOLERANCE} on both files)"
            )
    return None


def fidelity_recorded(
    *, fp32: ModelVersion, int8: ModelVersion, photos: Sequence[Photo] = ()
) -> dict | None:
    """The report recorded for these two files (``fidelity_record``), with where and how it was
    measured, how it was matched and the default rule applied today; None when none answers."""
    found = fidelity_record(fp32=fp32, int8=int8, photos=photos)
    if found is None:
        return None
    record, matched = found
    report = {
        **record["report"],
        "against": {"name": fp32.name, "version": fp32.version},
        "recorded": {
            **{key: record[key] for key in ("measured_on", "photo_sets", "command", "by_set")},
            "matched_by": matched,
        },
    }
    if record.get("jpeg_draft"):
        report["recorded"]["jpeg_draft_margin"] = float(record["jpeg_draft"]["margin"])
    return {**report, "default_rule": default_rule(report)}
