"""Request-log rows for the reporting tests, written through the service as a request would."""

import itertools
from datetime import UTC, datetime

from classification.results import ClassificationResult, Prediction
from reporting.models import RequestLog
from reporting.services import RequestOutcome, request_log_create

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
_ids = itertools.count()


def log_row(
    *,
    url: str = "",
    seconds: float = 0.1,
    at: datetime = T0,
    status: int = 200,
    error_code: str = "",
    cached: bool = False,
    cache_kind: str | None = None,
    label: str = "cat",
    confidence: float = 0.9,
    input_kind: str = "",
) -> RequestLog:
    """A log row written through the service, as a request would write it."""
    result = None
    if status == 200:
        result = ClassificationResult(
            predictions=[Prediction(label=label, confidence=confidence)],
            model_name="tiny",
            model_version=1,
            image_sha256="ab" * 32,
            cached=cached,
            cache_kind=cache_kind,
            processing_time=seconds,
        )
    return request_log_create(
        outcome=RequestOutcome(
            request_id=f"row-{next(_ids)}",
            status_code=status,
            processing_time=seconds,
            input_kind=input_kind or ("url" if url else "upload"),
            image_url=url,
            error_code=error_code,
            result=result,
            created_at=at,
        )
    )
