"""What classification tells the apps above it, without knowing them.

The request log (reporting) and shadow evaluation (ground_truth) listen to
``classify_request_answered``; classification imports neither.
"""

from typing import Any

from django.dispatch import Signal
from rest_framework.request import Request
from rest_framework.response import Response

# Sent once for every POST the classification API answers, success or error, before the answer
# leaves. Arguments: request (the DRF request), status_code, response (None for an unhandled
# error, which becomes a 500), result (the ClassificationResult, or None; its ``image_data``
# holds the image bytes the request had in hand, for a shadowed version to answer too).
# Receivers must not raise: a listener's failure would become the client's; nor block: the
# answer waits for them.
classify_request_answered = Signal()


class AnswerSignalMixin:
    """Sends ``classify_request_answered`` for every POST the view answers.

    ``finalize_response`` sees every answer DRF renders (including errors raised before the
    handler, such as throttling); ``handle_exception`` catches the unhandled ones that become
    500s. A view that classified stores its ClassificationResult in ``self.result``.
    """

    result: Any = None

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        if request.method == "POST":
            self._answered(request, status_code=response.status_code, response=response)
        return response

    def handle_exception(self, exc: Exception) -> Response:
        try:
            return super().handle_exception(exc)  # type: ignore[misc]
        except Exception:
            request = getattr(self, "request", None)
            if request is not None and request.method == "POST":
                self._answered(request, status_code=500, response=None)
            raise

    def _answered(self, request: Request, *, status_code: int, response: Any) -> None:
        # On the Django request, which the refusal middleware sees (DRF's wraps it).
        getattr(request, "_request", request).classify_answered = True  # type: ignore[union-attr]
        classify_request_answered.send(
            sender=type(self),
            request=request,
            status_code=status_code,
            response=response,
            result=self.result,
        )
        # The receivers took what they keep. The view and its request form a reference cycle,
        # freed only by the cyclic collector: the result's image bytes must not wait for it.
        self.result = None


def request_answered_mark_seen(request: Any) -> bool:
    """Whether the view already sent ``classify_request_answered`` for this Django request."""
    return bool(getattr(request, "classify_answered", False))
