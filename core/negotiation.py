"""Content negotiation for endpoints that always answer one way, whatever Accept says."""

from collections.abc import Iterable

from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request


class FixedContentNegotiation(BaseContentNegotiation):
    """Always the view's first parser and renderer.

    For /secret (text/plain, with JSON errors), /metrics and the health probes: scrapers,
    probes and scripts send all kinds of Accept headers, and none should turn an answer
    into a 406.
    """

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser | None:
        return next(iter(parsers), None)

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type
