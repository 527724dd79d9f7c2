"""Model versions and feedback rows for the ground truth statistics tests, written directly
(no model to run): a request-log row per feedback, as an answered request leaves."""

import itertools
from datetime import datetime

from classification.models import ModelVersion
from ground_truth.models import Feedback, ShadowPrediction
from reporting.models import RequestLog

_ids = itertools.count()


def model_version_row(
    *,
    name: str = "tiny",
    version: int = 1,
    stage: str = ModelVersion.Stage.PRODUCTION,
    labels: list[str] | None = None,
    shadow_share: float = 0.0,
) -> ModelVersion:
    """A registry row with a placeholder artifact (nothing here loads it)."""
    return ModelVersion.objects.create(
        name=name,
        version=version,
        source_format=ModelVersion.Format.TFLITE,
        source_artifact="none.tflite",
        source_sha256="0" * 64,
        artifact="none.tflite",
        artifact_sha256="0" * 64,
        artifact_size=1,
        labels=labels or ["cat", "dog", "fox"],
        input_size=32,
        preprocessing={},
        stage=stage,
        shadow_share=shadow_share,
    )


def feedback_row(
    version: ModelVersion,
    *,
    predicted: str = "cat",
    label: str | None = None,
    confidence: float = 0.9,
    review: str = Feedback.Review.PENDING,
    at: datetime | None = None,
    request_id: str | None = None,
) -> Feedback:
    """Feedback on one answered request: right when ``label`` is the predicted one (default)."""
    label = predicted if label is None else label
    log = RequestLog.objects.create(
        request_id=request_id or f"req-{next(_ids)}",
        input_kind=RequestLog.InputKind.UPLOAD,
        model_name=version.name,
        model_version=version.version,
        top_label=predicted,
        confidence=confidence,
        processing_time=0.01,
        status_code=200,
    )
    feedback = Feedback.objects.create(
        request_log=log,
        model_version=version,
        caller="anon:test",
        correct=label == predicted,
        predicted_label=predicted,
        confidence=confidence,
        label=label,
        review=review,
    )
    if at is not None:  # created_at is set on insert: move it afterwards
        Feedback.objects.filter(pk=feedback.pk).update(created_at=at)
        feedback.refresh_from_db()
    return feedback


def shadow_row(
    shadow: ModelVersion,
    *,
    request_id: str,
    production_label: str,
    label: str,
    production: ModelVersion | None = None,
    latency: float = 0.02,
) -> ShadowPrediction:
    return ShadowPrediction.objects.create(
        request_id=request_id,
        shadow_version=shadow,
        production_version=production,
        production_label=production_label,
        production_confidence=0.8,
        label=label,
        confidence=0.7,
        agrees=label == production_label,
        latency_seconds=latency,
    )
