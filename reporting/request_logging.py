"""The request log's side of classification: a row for every answer the API gives.

Connected to ``classification.signals.classify_request_answered`` in ``ReportingConfig.ready``.
"""

import contextlib
import json
import time
from collections.abc import Mapping
from typing import Any

from rest_framework.request import Empty, Request

from accounts.throttling import client_address
from classification.metrics import STAGE_SECONDS
from core.logs import request_annotate
from core.metrics import labelled
from core.middleware import request_elapsed, request_id
from reporting.models import RequestLog
from reporting.services import RequestOutcome, request_log_failures, request_log_record

# Request fields that name the input, in the order they are looked for.
_INPUT_FIELDS = [
    ("image_url", RequestLog.InputKind.URL),
    ("image", RequestLog.InputKind.UPLOAD),
    ("image_base64", RequestLog.InputKind.BASE64),
]


def request_log_on_answer(
    sender: object, *, request: Request, status_code: int, response: Any, result: Any, **_: Any
) -> None:
    """Receiver of classify_request_answered: one RequestLog row per answer; never raises."""
    try:
        outcome = request_outcome(
            request, status_code=status_code, response=response, result=result
        )
        request_annotate(request, **outcome.log_facts())
    except Exception as exc:  # logging must never break the answer
        request_log_failures.failed(exc)
        return
    started = time.perf_counter()
    request_log_record(outcome=outcome)
    labelled(STAGE_SECONDS, "log_write").observe(time.perf_counter() - started)


def request_outcome(
    request: Request, *, status_code: int, response: Any, result: Any
) -> RequestOutcome:
    """What the log row says about a request, read without ever parsing its body again."""
    input_kind, image_url = _request_input(request)
    succeeded = status_code < 400
    labels = _request_labels(request) if succeeded else None
    if succeeded and result is not None and result.processing_time:
        processing_time = float(result.processing_time)
    else:
        processing_time = round(request_elapsed(request), 6)
    return RequestOutcome(
        request_id=request_id(request),
        status_code=status_code,
        processing_time=processing_time,
        input_kind=input_kind,
        image_url=image_url,
        error_code="" if succeeded else (_error_code(response) or f"http_{status_code}"),
        result=result if succeeded else None,
        # The authenticated user, only if authentication already ran (never run it here).
        user=vars(request).get("_user"),
        # The address the rate limits count (behind NUM_PROXIES, the proxied client's), so that
        # clients behind one proxy keep apart here too (feedback's ownership rule reads it).
        client_address=client_address(request),
        labels=labels,
    )


def _request_input(request: Request) -> tuple[str, str]:
    # Only a body that was already parsed: re-parsing could raise, and a throttled request
    # must not cost a parse of its body.
    data = vars(request).get("_full_data", Empty)
    if data is Empty or not isinstance(data, Mapping):
        return "", ""
    for field, kind in _INPUT_FIELDS:
        if field in data:
            value = data.get(field)
            url = value if kind == RequestLog.InputKind.URL and isinstance(value, str) else ""
            return kind, url
    return "", ""


def _request_labels(request: Request) -> list[str] | None:
    """The labels a (successful, so validated) request sent, from its parsed body."""
    data = vars(request).get("_full_data", Empty)
    if data is Empty or not isinstance(data, Mapping) or "labels" not in data:
        return None
    # A multipart form carries one 'labels' field per label; JSON, a list.
    getlist = getattr(data, "getlist", None)
    labels = getlist("labels") if getlist is not None else data.get("labels")
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        return None
    return [label.strip() for label in labels]  # as the serializer validated them


def _error_code(response: Any) -> str:
    data = getattr(response, "data", None)
    if data is None and "json" in (getattr(response, "headers", {}).get("Content-Type") or ""):
        # A Django JsonResponse (refused before the view): read the code from its content.
        with contextlib.suppress(ValueError, TypeError):
            data = json.loads(response.content)
    if isinstance(data, Mapping):
        error = data.get("error")
        if isinstance(error, Mapping) and isinstance(error.get("code"), str):
            return error["code"]
    return ""
