"""Classifying an image: the request pipeline from bytes or URL to predictions, cached."""

import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from django.conf import settings

from accounts.throttling import Admission
from classification import metrics
from classification.cache_lookup import admit_and_read
from classification.caching import get_result_cache
from classification.intake.fetch_slots import fetch_slots
from classification.intake.fetching import image_fetch
from classification.results import (
    ClassificationResult,
    ImageSource,
    Prediction,
    TagPrediction,
)
from classification.serving.decode_budget import decode_budget
from classification.serving.engine import ServingModel, get_runtime
from classification.serving.imaging import DEFAULT_PREPROCESSING, image_decode, image_preprocess

T = TypeVar("T")

# Entries keep the 10 best predictions, so one entry answers any top_k.
CACHED_PREDICTIONS = 10


def image_classify(
    *,
    image_bytes: bytes,
    top_k: int,
    model_name: str | None = None,
    labels: list[str] | None = None,
) -> ClassificationResult:
    """Decode, preprocess and classify ``image_bytes`` with the production model, uncached.

    ``labels`` (zero-shot models only) replaces the version's labels for this call. Raises the
    image errors of ``image_decode``, UnknownModel, ModelNotReady, or InvalidClassificationRequest
    for labels the model cannot score.
    """
    model = get_runtime().serving_model(model_name)
    if labels is not None:
        model.labels_check(labels)
    return _classify(model=model, image_bytes=image_bytes, top_k=top_k, labels=labels)


def serving_model_classify(
    *, model: ServingModel, image_bytes: bytes, top_k: int, labels: list[str] | None = None
) -> ClassificationResult:
    """Classify ``image_bytes`` with an already loaded ``model`` (any stage), uncached.

    For reference profiles of a version before it serves, and benchmarks; raises the errors of
    ``image_decode`` and, for ``labels``, those of ``ServingModel.labels_check``.
    """
    if labels is not None:
        model.labels_check(labels)
    return _classify(model=model, image_bytes=image_bytes, top_k=top_k, labels=labels)


# ITU-R BT.601 luma weights, as Pillow's convert("L").
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _input_brightness(batch: np.ndarray, *, preprocessing: dict) -> float:
    """Mean luma (0-255) of the model input, undoing the pixel scaling (and standardisation)."""
    scale = preprocessing.get("scale", DEFAULT_PREPROCESSING["scale"])
    low, high = (float(bound) for bound in scale)
    # Per-channel means as one matrix product, not numpy's strided mean(axis=0), which is far
    # slower over an (N, 3) view (docs/performance.md).
    pixels = batch.reshape(-1, 3)
    mean_rgb = (np.ones(len(pixels), dtype=np.float32) @ pixels).astype(np.float64) / len(pixels)
    if "mean" in preprocessing or "std" in preprocessing:
        mean_rgb = mean_rgb * np.asarray(preprocessing.get("std", [1.0] * 3)) + np.asarray(
            preprocessing.get("mean", [0.0] * 3)
        )
    mean_rgb = (mean_rgb - low) * (255.0 / (high - low))
    return round(float(np.clip(mean_rgb @ _LUMA, 0.0, 255.0)), 3)


@dataclass(frozen=True)
class ImageScores:
    """What the model answered for one image, every label scored, before ranking."""

    probabilities: np.ndarray  # one per label (the version's, or the call's labels)
    tag_probabilities: np.ndarray | None  # a multi-task version's tag head, else None
    width: int  # the image's own size
    height: int
    brightness: float  # mean luma (0-255) of the model input
    timings: dict[str, float]


def serving_model_scores(
    *, model: ServingModel, image_bytes: bytes, labels: list[str] | None = None
) -> ImageScores:
    """Decode, preprocess and run ``image_bytes`` through ``model``: every score, unranked.

    The path of every classification (and of evaluations on labelled photos). ``labels``
    must have passed ``model.labels_check``. Raises the errors of ``image_decode``.
    """
    timings: dict[str, float] = {}
    with contextlib.ExitStack() as budget:
        # The decoded pixels count against this process's budget until the small model input
        # is made (see decode_budget); waiting for it is part of the decode time. A JPEG
        # decoded reduced holds its reduced size: what its decode takes in memory.
        mark = time.perf_counter()
        decoded = image_decode(
            data=image_bytes,
            max_pixels=settings.IMAGE_MAX_PIXELS,
            before_decode=lambda pixels: budget.enter_context(decode_budget.held(pixels=pixels)),
            input_size=model.input_size if settings.IMAGE_JPEG_DRAFT else None,
            preprocessing=model.preprocessing,
        )
        timings["decode"] = time.perf_counter() - mark

        mark = time.perf_counter()
        batch = image_preprocess(
            image=decoded.image, input_size=model.input_size, preprocessing=model.preprocessing
        )
        timings["preprocess"] = time.perf_counter() - mark
        width, height = decoded.width, decoded.height
        del decoded  # the full-size pixels go before the budget is given back

    mark = time.perf_counter()
    if labels is None:
        probabilities, tag_probabilities = model.heads(batch)
    else:
        probabilities, tag_probabilities = model.probabilities(batch, labels=labels), None
    timings["inference"] = time.perf_counter() - mark
    return ImageScores(
        probabilities=probabilities,
        tag_probabilities=tag_probabilities,
        width=width,
        height=height,
        brightness=_input_brightness(batch, preprocessing=model.preprocessing),
        timings=timings,
    )


def _classify(
    *,
    model: ServingModel,
    image_bytes: bytes,
    top_k: int,
    image_sha256: str | None = None,
    labels: list[str] | None = None,
) -> ClassificationResult:
    scores = serving_model_scores(model=model, image_bytes=image_bytes, labels=labels)
    names = model.labels if labels is None else labels
    # Stable, so that equal scores keep the order the labels were given in.
    best = np.argsort(-scores.probabilities, kind="stable")[:top_k]
    return ClassificationResult(
        predictions=[
            Prediction(label=names[index], confidence=float(scores.probabilities[index]))
            for index in best
        ],
        model_name=model.name,
        model_version=model.version,
        image_sha256=image_sha256 or hashlib.sha256(image_bytes).hexdigest(),
        timings=scores.timings,
        input_stats={
            "width": scores.width,
            "height": scores.height,
            "brightness": scores.brightness,
        },
        tags=_tags(model, scores.tag_probabilities),
    )


def _tags(model: ServingModel, probabilities: np.ndarray | None) -> list[TagPrediction] | None:
    if probabilities is None:
        return None
    return [
        TagPrediction(label=label, probability=float(probability), present=probability >= bar)
        for label, probability, bar in zip(
            model.tag_labels, probabilities.tolist(), model.tag_thresholds, strict=True
        )
    ]


def labels_digest(labels: list[str] | None) -> str:
    """What names a request's label set in cache keys: order and text matter, "" for none."""
    if labels is None:
        return ""
    return hashlib.sha256(json.dumps(labels, ensure_ascii=False).encode()).hexdigest()


def image_source_classify(
    *,
    source: ImageSource,
    top_k: int | None,
    model_name: str | None = None,
    labels: list[str] | None = None,
    client: str | None = None,
    admission: Admission | None = None,
) -> ClassificationResult:
    """Classify the image of ``source``, answering from the result cache when it can.

    ``labels`` (zero-shot models only) classifies against exactly those labels, in their
    cache entries of their own; on another kind of model it is InvalidClassificationRequest,
    raised before any download, as are labels whose prompts are too long.

    A URL seen before is answered without downloading it; bytes seen before (uploaded, sent
    as base64 or downloaded from any URL) without decoding or inference. Identical concurrent
    misses compute once. Raises what ``image_classify`` raises and, for URLs, the fetch errors
    of ``image_fetch`` (InvalidUrl, UrlUnreachable, UpstreamError, UpstreamTimeout,
    ImageTooLarge), and ServiceBusy when a URL that must be fetched finds no fetch slot free in
    this process or for ``client`` (its address; see ``intake.fetch_slots``). Errors are never
    cached. Each answer is counted in the metrics. ``admission`` (the request's rate limit) is
    taken with the first cache lookup, in the same Redis round trip; raises Throttled when the
    limit is exceeded, before any fetch, decode or inference.
    ``top_k`` None: the model's default (2 for a multi-task model, else CLASSIFY_DEFAULT_TOP_K).
    """
    result = _image_source_classify(
        source=source,
        top_k=top_k,
        model_name=model_name,
        labels=labels,
        client=client,
        admission=admission,
    )
    metrics.classification_observe(result)
    return result


def _image_source_classify(
    *,
    source: ImageSource,
    top_k: int | None,
    model_name: str | None,
    labels: list[str] | None,
    client: str | None,
    admission: Admission | None,
) -> ClassificationResult:
    model = get_runtime().serving_model(model_name)  # an unknown model fails before any traffic
    top_k = top_k or model.default_top_k
    if labels is not None:
        model.labels_check(labels)  # bad labels, too, fail before any traffic
    timings: dict[str, float] = {}
    if source.kind != "url":
        assert source.data is not None
        entry, cache_kind = _classify_bytes_cached(
            model=model, data=source.data, timings=timings, labels=labels, admission=admission
        )
        result = _result_from_entry(
            entry, model=model, top_k=top_k, cache_kind=cache_kind, timings=timings
        )
        result.image_data = source.data
        return result

    assert source.url is not None
    url = source.url  # a str from here on, in the nested functions too
    cache = get_result_cache()
    url_key = _entry_key(kind="url", model=model, identity=url, labels=labels)
    cached = _timed(
        timings,
        "cache_lookup",
        lambda: admit_and_read(admission=admission, kind="url", key=url_key),
    )
    if cached is not None:
        return _result_from_entry(
            cached, model=model, top_k=top_k, cache_kind="url", timings=timings
        )

    content_hit: list[str | None] = [None]
    fetched_data: list[bytes | None] = [None]  # this thread's download (a waiter has none)

    def fetch_and_classify() -> dict:
        fetched = _timed(timings, "fetch", lambda: image_fetch(url=url))
        fetched_data[0] = fetched.data
        found, content_hit[0] = _classify_bytes_cached(
            model=model, data=fetched.data, timings=timings, labels=labels
        )
        return found  # stored under the URL by single_flight

    # The slot covers waiting for an identical fetch too: a waiter holds a thread as long.
    with fetch_slots.held(client=client):
        entry, computed = cache.single_flight(url_key, fetch_and_classify, kind="url")
    cache_kind = content_hit[0] if computed else "url"
    result = _result_from_entry(
        entry, model=model, top_k=top_k, cache_kind=cache_kind, timings=timings
    )
    result.image_data = fetched_data[0]
    return result


def _entry_key(*, kind: str, model: ServingModel, identity: str, labels: list[str] | None) -> str:
    """The result-cache key of an answer: model version, URL or content, and the label set."""
    return get_result_cache().key(
        kind=kind,
        model_name=model.name,
        model_version=model.version,
        identity=identity,
        labels_digest=labels_digest(labels),
    )


def _classify_bytes_cached(
    *,
    model: ServingModel,
    data: bytes,
    timings: dict[str, float],
    labels: list[str] | None,
    admission: Admission | None = None,
) -> tuple[dict, str | None]:
    """The cache entry for ``data`` and "image" when it came from the cache, None if computed."""
    cache = get_result_cache()
    sha256 = hashlib.sha256(data).hexdigest()
    key = _entry_key(kind="image", model=model, identity=sha256, labels=labels)
    entry = _timed(
        timings, "cache_lookup", lambda: admit_and_read(admission=admission, kind="image", key=key)
    )
    if entry is not None:
        return entry, "image"

    def compute() -> dict:
        result = _classify(
            model=model,
            image_bytes=data,
            top_k=CACHED_PREDICTIONS,
            image_sha256=sha256,
            labels=labels,
        )
        timings.update(result.timings)
        computed_entry = {
            "predictions": [[p.label, p.confidence] for p in result.predictions],
            "image_sha256": result.image_sha256,
            "input_stats": result.input_stats,
            "tags": [[t.label, t.probability, t.present] for t in result.tags]
            if result.tags is not None
            else None,
        }
        return computed_entry  # stored by single_flight

    entry, computed = cache.single_flight(key, compute, kind="image")
    return entry, None if computed else "image"


def _result_from_entry(
    entry: dict,
    *,
    model: ServingModel,
    top_k: int,
    cache_kind: str | None,
    timings: dict[str, float],
) -> ClassificationResult:
    return ClassificationResult(
        predictions=[
            Prediction(label=label, confidence=float(confidence))
            for label, confidence in entry["predictions"][:top_k]
        ],
        model_name=model.name,
        model_version=model.version,
        image_sha256=entry["image_sha256"],
        cached=cache_kind is not None,
        cache_kind=cache_kind,
        timings=timings,
        # Entries written before input statistics existed have none.
        input_stats=dict(entry.get("input_stats") or {}),
        tags=[
            TagPrediction(label=label, probability=float(probability), present=bool(present))
            for label, probability, present in entry["tags"]
        ]
        if entry.get("tags") is not None
        else None,
    )


def _timed(timings: dict[str, float], stage: str, call: Callable[[], T]) -> T:
    """Run ``call``, adding its duration to ``timings[stage]``."""
    mark = time.perf_counter()
    try:
        return call()
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - mark
