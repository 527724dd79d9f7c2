"""Request body parsers that refuse over-size bodies (413) before reading them whole."""

import codecs
import json
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpRequest
from django.utils.datastructures import MultiValueDict
from rest_framework.exceptions import ParseError
from rest_framework.parsers import DataAndFiles, JSONParser, MultiPartParser

from classification.exceptions import InvalidClassificationRequest
from core.errors import PayloadTooLarge

if TYPE_CHECKING:
    from django.http.request import _ImmutableQueryDict  # a name of django-stubs only

# Room for the JSON or multipart framing around the image itself.
_FRAMING_ALLOWANCE = 64 * 1024


def json_body_limit() -> int:
    """Largest JSON body: a base64 image of IMAGE_MAX_BYTES plus framing."""
    return settings.IMAGE_MAX_BYTES * 4 // 3 + _FRAMING_ALLOWANCE


def _declared_length(parser_context: Mapping[str, Any] | None) -> int | None:
    request = (parser_context or {}).get("request")
    if request is None:
        return None
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0) or None
    except (AttributeError, ValueError):
        return None


def json_nesting_depth_exceeds(text: str, limit: int) -> bool:
    """Whether ``text`` nests arrays/objects deeper than ``limit`` (strings are skipped)."""
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


class BoundedJSONParser(JSONParser):
    """DRF's JSON parser with a body size limit and a nesting limit (deep nesting is a 500 in
    the stock parser, through RecursionError)."""

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:  # any JSON value: the body may be an array or a scalar, not only an object
        limit = json_body_limit()
        declared = _declared_length(parser_context)
        if declared is not None and declared > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit:,} bytes.")
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit:,} bytes.")
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = codecs.decode(raw, encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise ParseError("The request body is not valid UTF-8 JSON.") from exc
        if json_nesting_depth_exceeds(text, settings.REQUEST_JSON_MAX_DEPTH):
            raise ParseError("The JSON body is nested too deeply.")
        try:
            return json.loads(text, parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as exc:
            raise ParseError("The request body is not valid JSON.") from exc


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


class _SizeLimitedUploadHandler(FileUploadHandler):
    """Stops a multipart upload as soon as its files pass the image size limit, or at the start
    of a second file part (one image per request)."""

    def __init__(self, request: HttpRequest | None = None, *, limit: int) -> None:
        super().__init__(request)
        self.limit = limit
        self.received = 0
        self.files = 0

    def new_file(self, *args: Any, **kwargs: Any) -> None:  # passed on unchanged
        self.files += 1
        if self.files > 1:
            raise InvalidClassificationRequest("Send one file part only.")
        super().new_file(*args, **kwargs)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.received > self.limit:
            raise PayloadTooLarge(f"The image is larger than {self.limit:,} bytes.")
        return raw_data  # pass on to Django's own memory / temporary-file handlers

    def file_complete(self, file_size: int) -> None:
        return None


class BoundedMultiPartParser(MultiPartParser):
    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> "DataAndFiles[_ImmutableQueryDict, MultiValueDict]":
        limit = settings.IMAGE_MAX_BYTES
        declared = _declared_length(parser_context)
        if declared is not None and declared > limit + _FRAMING_ALLOWANCE:
            raise PayloadTooLarge(f"The upload is larger than {limit:,} bytes.")
        assert parser_context is not None  # DRF's Request always passes its context
        request = parser_context["request"]
        handlers = list(request.upload_handlers)
        request.upload_handlers = [_SizeLimitedUploadHandler(request, limit=limit), *handlers]
        return super().parse(stream, media_type, parser_context)
