"""The in-memory multipart path (classification/intake/parsers.py) reads a plain body exactly as
Django's parser does, hands any other body to Django's parser, and keeps the upload limits."""

import io

import pytest
from django.core.files.uploadhandler import MemoryFileUploadHandler
from django.http.multipartparser import MultiPartParser

from classification.exceptions import InvalidClassificationRequest
from classification.intake import parsers
from core.errors import PayloadTooLarge
from tests.support.images import image_bytes

pytestmark = pytest.mark.django_db

BOUNDARY = "b0undary"
MEDIA_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
PNG = image_bytes(format="PNG", size=(8, 8))


def body_of(parts: list[tuple[bytes, bytes]], *, before=b"", after=b"--\r\n", eol=b"\r\n"):
    out = before
    for headers, content in parts:
        out += b"--" + BOUNDARY.encode() + b"\r\n" + headers + b"\r\n\r\n" + content + eol
    return out + b"--" + BOUNDARY.encode() + after


def file_part(name=b"image", filename=b"a.png", content=PNG, extra=b"Content-Type: image/png"):
    disposition = b'Content-Disposition: form-data; name="' + name + b'"; filename="' + filename
    return (disposition + b'"' + (b"\r\n" + extra if extra else b""), content)


def field_part(name: bytes, value: bytes):
    return (b'Content-Disposition: form-data; name="' + name + b'"', value)


def readable(data, files) -> tuple[dict, dict]:
    uploads = {
        name: [
            (f.name, f.content_type, f.size, f.charset, f.content_type_extra, f.read()) for f in fs
        ]
        for name, fs in files.lists()
    }
    return dict(data.lists()), uploads


def django_parse(body: bytes) -> tuple[dict, dict]:
    meta = {"CONTENT_TYPE": MEDIA_TYPE, "CONTENT_LENGTH": str(len(body))}
    parser = MultiPartParser(meta, io.BytesIO(body), [MemoryFileUploadHandler()], "utf-8")
    return readable(*parser.parse())


def plain_parse(body: bytes, limit: int = 10_000_000) -> tuple[dict, dict]:
    parsed = parsers._plain_multipart_parse(body, MEDIA_TYPE, "utf-8", limit=limit)
    return readable(parsed.data, parsed.files)


PLAIN_BODIES = {
    "one file": body_of([file_part()]),
    "fields and a file": body_of(
        [field_part(b"top_k", b"3"), field_part(b"model", b""), file_part(content=PNG + b"\r\n")]
    ),
    "repeated fields, UTF-8": body_of(
        [field_part(b"labels", b"cat"), field_part(b"labels", "chat noir é".encode())]
    ),
    "a path as file name": body_of([file_part(filename=b"x/y\\z/a&amp;b.png")]),
    "file name '..' (skipped)": body_of([file_part(filename=b"..")]),
    "empty file name (a field)": body_of([file_part(filename=b"")]),
    "empty file": body_of([file_part(content=b"")]),
    "charset parameter": body_of([file_part(extra=b"Content-Type: image/png; charset=utf-8")]),
    "no content type": body_of([file_part(extra=b"")]),
    "LF line ends": body_of([file_part()], eol=b"\n"),
    "no final line break": body_of([file_part()], after=b"--"),
    "a blank line in a value": body_of([field_part(b"x", b"a\r\n\r\nb")]),
}


@pytest.mark.parametrize("body", PLAIN_BODIES.values(), ids=PLAIN_BODIES.keys())
def test_a_plain_body_reads_as_djangos_parser_reads_it(body):
    assert plain_parse(body) == django_parse(body)


OTHER_BODIES = {
    "a preamble": body_of([file_part()], before=b"preamble\r\n"),
    "an epilogue": body_of([file_part()], after=b"--\r\nepilogue"),
    "base64 transfer encoding": body_of(
        [file_part(extra=b"Content-Transfer-Encoding: base64", content=b"iVBORw0K")]
    ),
    "RFC 2231 file name in an unknown charset": body_of(
        [(b"Content-Disposition: form-data; name=\"image\"; filename*=x-nope''a.png", PNG)]
    ),
    "no closing delimiter": body_of([file_part()])[: -len(BOUNDARY) - 6],
    "a part without a name": body_of([(b"Content-Disposition: form-data", b"x")]),
    "large fields": body_of([field_part(b"x", b"y" * 70_000)]),
}


@pytest.mark.parametrize("body", OTHER_BODIES.values(), ids=OTHER_BODIES.keys())
def test_any_other_body_is_left_to_djangos_parser(body):
    with pytest.raises(parsers._NotPlain):
        plain_parse(body)


def test_the_upload_limits_hold_on_the_plain_path():
    with pytest.raises(PayloadTooLarge):
        plain_parse(body_of([file_part(content=b"x" * 101)]), limit=100)
    two = body_of([file_part(), file_part(name=b"other")])
    with pytest.raises(InvalidClassificationRequest):
        plain_parse(two)


def test_a_file_over_the_memory_upload_size_stays_in_memory_whole():
    content = b"\xff\xd8" + b"x" * 3_000_000  # over FILE_UPLOAD_MAX_MEMORY_SIZE
    upload = plain_parse(body_of([file_part(content=content)]))[1]["image"][0]
    assert upload[2] == len(content) and upload[5] == content


def test_a_body_left_to_django_is_classified_like_any_other(api_client, tiny_model):
    body = body_of([file_part()], before=b"This is a preamble.\r\n")
    response = api_client.generic("POST", "/classify-image", body, content_type=MEDIA_TYPE)
    assert response.status_code == 200, response.content
    assert response.json()["predictions"]


def test_a_plain_upload_is_classified(api_client, tiny_model):
    body = body_of([field_part(b"top_k", b"1"), file_part()])
    response = api_client.generic("POST", "/classify-image", body, content_type=MEDIA_TYPE)
    assert response.status_code == 200, response.content
    assert len(response.json()["predictions"]) == 1
