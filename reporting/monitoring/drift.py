"""The arithmetic of model monitoring: fixed bins, reference profiles, population stability.

No database here: ``reporting.monitoring`` counts rows into the same bins with SQL, and this
module turns counts into shares and shares into a population stability index (PSI).

A reference profile (stored on ``ModelVersion.reference_profile``) is a JSON object:

    {"format": 1, "source": "images" | "requests", "description": "...", "built_at": ISO,
     "count": answers, "labels": {label: answers}, "confidence": [10 counts],
     "confidence_sample": [<= 1000 sorted values], "brightness": [10 counts],
     "image_size": [8 counts],
     "means": {"width": w, "height": h, "brightness": b},
     "tags": {"answers": answers with tags, "present": {tag label: answers with it present}}}

"tags" is there only for models that answer tags (the multi-task kind); profiles without it
(older ones, other kinds) compare no tag rates. A tag's rate is compared as a two-bin
distribution (present, absent), so the same PSI scale and thresholds apply to it.
"""

import bisect
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import overload

PROFILE_FORMAT = 1

# Shares below this count as this in the PSI, so an empty bin on one side gives a large but
# finite term instead of ln(0).
PSI_EPSILON = 1e-4

# Interior bin edges: bin i holds values v with edges[i-1] <= v < edges[i] (open at both ends).
CONFIDENCE_EDGES = [round(i / 10, 1) for i in range(1, 10)]  # ten bins of 0.1
BRIGHTNESS_EDGES = [round(25.6 * i, 1) for i in range(1, 10)]  # ten bins of mean luma 0-255
# Image size by pixel count: thumbnails, web images, photos, large photos.
IMAGE_SIZE_EDGES = [10_000, 50_000, 100_000, 300_000, 1_000_000, 3_000_000, 10_000_000]

BIN_EDGES: dict[str, list[float]] = {
    "confidence": CONFIDENCE_EDGES,
    "brightness": BRIGHTNESS_EDGES,
    "image_size": IMAGE_SIZE_EDGES,  # type: ignore[dict-item]
}


def bin_index(value: float, edges: Sequence[float]) -> int:
    return bisect.bisect_right(edges, value)


def histogram(values: Iterable[float], edges: Sequence[float]) -> list[int]:
    counts = [0] * (len(edges) + 1)
    for value in values:
        counts[bin_index(value, edges)] += 1
    return counts


@overload
def shares(counts: Mapping[str, int]) -> dict[str, float]: ...
@overload
def shares(counts: Sequence[int]) -> list[float]: ...
def shares(counts: Mapping[str, int] | Sequence[int]) -> dict[str, float] | list[float]:
    """Counts as fractions of their total (all zero when the total is zero)."""
    if isinstance(counts, Mapping):
        total = sum(counts.values())
        return {key: (n / total if total else 0.0) for key, n in counts.items()}
    total = sum(counts)
    return [(n / total if total else 0.0) for n in counts]


def psi(
    reference: Mapping[str, int] | Sequence[int], recent: Mapping[str, int] | Sequence[int]
) -> float | None:
    """Population stability index of ``recent`` against ``reference`` (bin counts).

    PSI = sum over bins of (recent share - reference share) * ln(recent share / reference share),
    shares floored at PSI_EPSILON. Label counts are dicts (bins: the union of their keys);
    fixed-bin counts are lists of equal length. None when either side has no observations.
    By convention < 0.1 is stable, 0.1-0.25 a moderate shift, >= 0.25 a significant shift.
    """
    if isinstance(reference, Mapping) != isinstance(recent, Mapping):
        raise TypeError("Compare label counts with label counts and bins with bins.")
    if isinstance(reference, Mapping):
        assert isinstance(recent, Mapping)
        keys = sorted(set(reference) | set(recent))
        expected = [reference.get(key, 0) for key in keys]
        actual = [recent.get(key, 0) for key in keys]
    else:
        assert not isinstance(recent, Mapping)
        if len(reference) != len(recent):
            raise ValueError("Both sides must have the same bins.")
        expected, actual = list(reference), list(recent)
    if sum(expected) == 0 or sum(actual) == 0:
        return None
    total = 0.0
    for e, a in zip(shares(expected), shares(actual), strict=True):
        e, a = max(e, PSI_EPSILON), max(a, PSI_EPSILON)
        total += (a - e) * math.log(a / e)
    return total


# The most top-1 confidences a profile keeps (evenly spaced order statistics beyond that).
CONFIDENCE_SAMPLE_SIZE = 1000


def sorted_sample(values: Sequence[float], size: int = CONFIDENCE_SAMPLE_SIZE) -> list[float]:
    """``values`` sorted; when there are more than ``size``, ``size`` evenly spaced of them."""
    ordered = sorted(values)
    if len(ordered) > size:
        step = (len(ordered) - 1) / (size - 1)
        ordered = [ordered[round(i * step)] for i in range(size)]
    return [round(value, 6) for value in ordered]


def share_below(sample: Sequence[float], threshold: float) -> float | None:
    """The share of a sorted sample below ``threshold`` (None for an empty sample)."""
    if not sample:
        return None
    return bisect.bisect_left(sample, threshold) / len(sample)


@dataclass(frozen=True)
class Observation:
    """One answered request as the profile sees it."""

    label: str
    confidence: float
    width: int | None = None
    height: int | None = None
    brightness: float | None = None
    # A multi-task model's tags: label -> present. None for models without a tag head.
    tags: Mapping[str, bool] | None = None


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def tag_counts(observations: Sequence[Observation]) -> dict | None:
    """``{"answers": n, "present": {label: count}}`` over the observations that have tags
    (every label seen is a key, present or not); None when none has."""
    tagged = [o.tags for o in observations if o.tags is not None]
    if not tagged:
        return None
    present: dict[str, int] = {}
    for tags in tagged:
        for label, is_present in tags.items():
            present[label] = present.get(label, 0) + int(bool(is_present))
    return {"answers": len(tagged), "present": present}


def tag_rate_psi(
    *, reference_present: int, reference_answers: int, recent_present: int, recent_answers: int
) -> float | None:
    """PSI of a tag's rate: the (present, absent) shares of both sides as two bins.

    None when either side has no answers. A rate moving from 10 % to 30 % gives about 0.27,
    from 10 % to 20 % about 0.08.
    """
    return psi(
        [reference_present, reference_answers - reference_present],
        [recent_present, recent_answers - recent_present],
    )


def profile_build(
    observations: Sequence[Observation], *, source: str, description: str, built_at: datetime
) -> dict:
    """A reference profile (see the module docstring) of ``observations``."""
    confidences = [o.confidence for o in observations]
    sized = [o for o in observations if o.width is not None and o.height is not None]
    brightness = [o.brightness for o in observations if o.brightness is not None]
    profile: dict = {
        "format": PROFILE_FORMAT,
        "source": source,
        "description": description,
        "built_at": built_at.isoformat(),
        "count": len(observations),
        "labels": dict(Counter(o.label for o in observations).most_common()),
        "confidence": histogram(confidences, CONFIDENCE_EDGES),
        # Kept so that the low-confidence share holds for any MONITORING_LOW_CONFIDENCE.
        "confidence_sample": sorted_sample(confidences),
        "brightness": histogram(brightness, BRIGHTNESS_EDGES),
        "image_size": histogram(
            [o.width * o.height for o in sized],  # type: ignore[operator]
            IMAGE_SIZE_EDGES,
        ),
        "means": {
            "width": _mean([float(o.width) for o in sized]),  # type: ignore[arg-type]
            "height": _mean([float(o.height) for o in sized]),  # type: ignore[arg-type]
            "brightness": _mean(brightness),
        },
    }
    tags = tag_counts(observations)
    if tags is not None:
        profile["tags"] = tags
    return profile
