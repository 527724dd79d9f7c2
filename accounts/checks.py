"""System checks for the accounts settings (run by 'manage.py check --deploy')."""

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, register

# HS256 needs a key at least as long as its hash: 256 bits.
_MIN_SIGNING_KEY_LENGTH = 32


@register(Tags.security, deploy=True)
def check_jwt_signing_key(app_configs: Any, **kwargs: Any) -> list[Error]:
    key = settings.SIMPLE_JWT.get("SIGNING_KEY") or ""
    assert isinstance(key, str)  # settings.py reads it from the environment
    hint = "Set JWT_SIGNING_KEY to a long random value of its own (docs/accounts.md)."
    if not key:
        return [Error("No JWT signing key is set.", hint=hint, id="accounts.E001")]
    if key == settings.SECRET_KEY:
        return [
            Error(
                "The JWT signing key is the SECRET_KEY: a leak of either forges both tokens "
                "and sessions.",
                hint=hint,
                id="accounts.E002",
            )
        ]
    if len(key) < _MIN_SIGNING_KEY_LENGTH:
        return [
            Error(
                f"The JWT signing key is shorter than {_MIN_SIGNING_KEY_LENGTH} characters.",
                hint=hint,
                id="accounts.E003",
            )
        ]
    return []
