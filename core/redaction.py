"""URLs as logs may keep them: without credentials.

A client may put credentials in an image URL: a user name and password (``user:pw@host``) or
a signed or token-bearing query (``?token=...``, ``X-Amz-Signature=...``). What the service
logs, stores or exports keeps the URL's shape but not those: the userinfo goes, and the value of
every query (or fragment) parameter whose name contains one of URL_REDACT_QUERY_WORDS (case
insensitively) becomes ``REDACTED``. Everything else is kept byte for byte.
"""

import re
import urllib.parse

from django.conf import settings

REDACTED = "REDACTED"

# scheme ":" "//" authority, as RFC 3986 splits it (the authority ends at / ? or #).
_AUTHORITY = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*:)?//(?P<authority>[^/?#]*)")


def url_redact(url: str, *, words: list[str] | None = None) -> str:
    """``url`` without userinfo and without the values of credential-like parameters."""
    if not url:
        return url
    words = [w.lower() for w in (settings.URL_REDACT_QUERY_WORDS if words is None else words)]
    url = _without_userinfo(url)
    base, hash_mark, fragment = url.partition("#")
    path, question_mark, query = base.partition("?")
    redacted = path + question_mark + _parameters_redact(query, words)
    return redacted + hash_mark + (_parameters_redact(fragment, words) if hash_mark else "")


def _without_userinfo(url: str) -> str:
    match = _AUTHORITY.match(url)
    if match is not None:
        authority = match.group("authority")
        if "@" not in authority:
            return url
        host = authority.rpartition("@")[2]
        return (match.group("head") or "") + "//" + host + url[match.end() :]
    # No "//": a "user:pw@host/..." a client typed without a scheme is not kept either.
    end = min((i for i in (url.find(c) for c in "/?#") if i >= 0), default=len(url))
    if "@" in url[:end]:
        return url[:end][url[:end].rindex("@") + 1 :] + url[end:]
    return url


def _parameters_redact(text: str, words: list[str]) -> str:
    if "=" not in text or not words:
        return text
    pieces = re.split(r"([&;])", text)
    for index in range(0, len(pieces), 2):
        name, equals, value = pieces[index].partition("=")
        if equals and value and _looks_like_credential(name, words):
            pieces[index] = f"{name}={REDACTED}"
    return "".join(pieces)


def _looks_like_credential(name: str, words: list[str]) -> bool:
    decoded = urllib.parse.unquote_plus(name).lower()
    return any(word in decoded for word in words)
