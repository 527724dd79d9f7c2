"""Request body parsers that refuse over-size bodies (413) before reading them whole."""

import codecs
import io
import json
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any

from django.conf import settings
from django.core.files.uploadedfile import InMemoryUploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpRequest, QueryDict
from django.http.multipartparser import MultiPartParser as DjangoMultiPartParser
from django.utils.datastructures import MultiValueDict
from django.utils.encoding import force_str
from django.utils.http import parse_header_parameters
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


# The in-memory multipart path takes only bodies it reads exactly as Django's parser would; any
# other body (a preamble, Content-Transfer-Encoding, many or large fields, odd framing) goes to
# Django's parser, so that its answers are Django's.
_MAX_PLAIN_HEADER = 1024
_MAX_PLAIN_PARTS = 100
_MAX_PLAIN_FIELD_BYTES = 64 * 1024
_PLAIN_PART_HEADERS = frozenset({"content-disposition", "content-type"})


# Django's own file-name cleaning, from an instance made only for it (it reads no state).
_FILE_NAMES = DjangoMultiPartParser.__new__(DjangoMultiPartParser)


class _NotPlain(Exception):
    """The body is not one the in-memory path reads: hand it to Django's parser."""


class BoundedMultiPartParser(MultiPartParser):
    """DRF's multipart parser with the image size limit and one file part per request.

    The body is in memory already (the asynchronous front reads it whole), so a plain
    multipart body is cut at its boundaries with ``bytes.find`` and the file is one slice of
    it: Django's parser would copy it through 64 kB chunks into a buffer, or for uploads
    over FILE_UPLOAD_MAX_MEMORY_SIZE into a temporary file, and back (docs/performance.md,
    "Where a request's CPU goes"). Limits and errors are the same either way.
    """

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
        # Bounded by the declared length, checked above (Django reads no more than it).
        body = stream.read()
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            return _plain_multipart_parse(body, media_type or "", encoding, limit=limit)
        except _NotPlain:
            pass
        handlers = list(request.upload_handlers)
        request.upload_handlers = [_SizeLimitedUploadHandler(request, limit=limit), *handlers]
        return super().parse(io.BytesIO(body), media_type, parser_context)


def _plain_multipart_parse(
    body: bytes, media_type: str, encoding: str, *, limit: int
) -> "DataAndFiles[_ImmutableQueryDict, MultiValueDict]":
    """The fields and the file of a plain multipart body, as Django's parser returns them."""
    boundary = _plain_boundary(media_type)
    delimiter = b"--" + boundary
    if not body.startswith(delimiter):  # a preamble: Django may read it as a part
        raise _NotPlain
    data: QueryDict = QueryDict(mutable=True, encoding=encoding)
    files: MultiValueDict = MultiValueDict()
    start, parts, field_bytes, file_parts = len(delimiter), 0, 0, 0
    while not body.startswith(b"--", start):  # the closing delimiter ends the body
        end = body.find(delimiter, start)
        parts += 1
        if end < 0 or parts > _MAX_PLAIN_PARTS or not body.startswith(b"\r\n", start):
            raise _NotPlain
        # Django's part ends before the delimiter, less one line break before it.
        content_end = end - (body[end - 1 : end] == b"\n")
        content_end -= body[content_end - 1 : content_end] == b"\r"
        # Django looks for the end of a part's headers in its first kilobyte.
        header_end = body.find(b"\r\n\r\n", start, min(start + _MAX_PLAIN_HEADER, content_end))
        if header_end < 0:
            raise _NotPlain
        name, file_name, content_type, extra = _plain_part_headers(body[start + 2 : header_end])
        content_start = header_end + 4
        if file_name is None:
            field_bytes += max(0, content_end - content_start)
            if field_bytes > _MAX_PLAIN_FIELD_BYTES:
                raise _NotPlain
            value = force_str(body[content_start:content_end], encoding, errors="replace")
            data.appendlist(name, value)
        elif file_name := _FILE_NAMES.sanitize_file_name(file_name):
            file_parts += 1  # the same checks, in the same order, as _SizeLimitedUploadHandler
            if file_parts > 1:
                raise InvalidClassificationRequest("Send one file part only.")
            size = max(0, content_end - content_start)
            if size > limit:
                raise PayloadTooLarge(f"The image is larger than {limit:,} bytes.")
            # The one copy of the image: BytesIO shares it, and read() from the start returns it.
            content = io.BytesIO(body[content_start : content_start + size])
            # The charset as Django's parser passes it: bytes (the stubs say str).
            charset: Any = extra.get("charset")
            upload = InMemoryUploadedFile(
                content, name, file_name, content_type, size, charset, extra
            )
            files.appendlist(name, upload)
        start = end + len(delimiter)
    if body[start:] not in (b"--", b"--\r\n"):  # Django reads on past a closing delimiter
        raise _NotPlain
    data._mutable = False
    return DataAndFiles(data, files)  # type: ignore[arg-type]


def _plain_boundary(media_type: str) -> bytes:
    if not media_type.startswith("multipart/") or not media_type.isascii():
        raise _NotPlain
    _, params = parse_header_parameters(media_type)
    boundary = params.get("boundary")
    if not boundary or not DjangoMultiPartParser.boundary_re.fullmatch(boundary):
        raise _NotPlain  # Django answers these with its own errors
    return boundary.encode("ascii")


def _plain_part_headers(raw: bytes) -> tuple[str, str | None, str, dict[str, bytes]]:
    """A part's field name, file name (None for a field), content type and its parameters."""
    if not raw.isascii():
        raise _NotPlain
    headers: dict[str, tuple[str, dict[str, str]]] = {}
    for line in raw.decode("ascii").split("\r\n"):
        try:
            main, params = parse_header_parameters(line)
        except ValueError as exc:  # an RFC 2231 value in an unknown charset: Django skips it
            raise _NotPlain from exc
        header, colon, value = main.partition(":")
        if not colon or header not in _PLAIN_PART_HEADERS or header in headers:
            raise _NotPlain
        headers[header] = (value, params)
    disposition = headers.get("content-disposition", ("", {}))[1]
    name = disposition.get("name", "").strip()
    if not name:
        raise _NotPlain
    content_type, params = headers.get("content-type", ("", {}))
    # As Django: a part is a file when its disposition names a non-empty file name, and the
    # parameters of its content type (its charset too) are bytes.
    file_name = disposition.get("filename") or None
    return name, file_name, content_type.strip(), {k: v.encode() for k, v in params.items()}
