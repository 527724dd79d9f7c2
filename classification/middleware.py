"""A log row for a classification request that Django refused before the view ran."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from classification.signals import classify_request_answered, request_answered_mark_seen


class ClassifyRefusalMiddleware:
    """Sends ``classify_request_answered`` for a ``POST /classify-image`` that never reached its
    view (an unknown Host header, say, refused by CommonMiddleware), so that it is logged like
    every other answer: the view's own answers are sent by AnswerSignalMixin and not twice.

    Placed right after the access-log middleware, so that it sees every refusal below it.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self._path: str | None = None

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if request.method != "POST" or request_answered_mark_seen(request):
            return response
        if self._path is None:
            self._path = reverse("classification:classify-image")
        if request.path_info == self._path:
            classify_request_answered.send(
                sender=type(self),
                request=request,
                status_code=response.status_code,
                response=response,
                result=None,
            )
        return response
