"""System checks for the secret settings (run by 'manage.py check --deploy').

PRODUCTION=1 already refuses to start with a weak key (classifier_site.env.env_secret); these
report the same thing as errors for a deploy check run without it.
"""

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, register

from core.secret_keys import secret_weakness

_GENERATE = "python3 -c 'import secrets; print(secrets.token_urlsafe(50))'"


@register(Tags.security, deploy=True)
def check_secret_key(app_configs: Any, **kwargs: Any) -> list[Error]:
    # Django's own check (security.W009) only warns; a guessable key forges sessions.
    weakness = secret_weakness(settings.SECRET_KEY)
    if weakness:
        hint = f"Set SECRET_KEY to a long random value: {_GENERATE}."
        return [Error(f"SECRET_KEY {weakness}.", hint=hint, id="accounts.E004")]
    return []


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
    weakness = secret_weakness(key)
    if weakness:
        return [Error(f"The JWT signing key {weakness}.", hint=hint, id="accounts.E003")]
    return []
