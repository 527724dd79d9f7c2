"""What makes a secret key unfit for production: too short, or a value someone wrote down.

Shared by the settings (which refuse to start with PRODUCTION=1) and the deploy system checks
(which report the same thing as an error), so the two never disagree.
"""

# Django's own deploy check asks as much of SECRET_KEY (security.W009); HS256 needs 32 bytes.
MIN_SECRET_LENGTH = 50

# Values copied from examples and tutorials. Matched whole (ignoring case and surrounding
# space), except the two markers below, which are refused wherever they appear.
_CLASSIC_PLACEHOLDERS = frozenset(
    {
        "changeme",
        "change-me",
        "change_me",
        "secret",
        "secret-key",
        "secret_key",
        "secretkey",
        "password",
        "default",
        "insecure",
        "example",
        "test",
        "dev",
        "development",
        "xxx",
        "todo",
    }
)
# Example files (deploy/k8s/components/secrets-file/secrets.env.example) say CHANGE-ME;
# 'startproject' writes keys starting with django-insecure-.
_PLACEHOLDER_MARKERS = ("change-me", "django-insecure-")


def secret_weakness(value: str) -> str | None:
    """Why ``value`` cannot be a production secret, as a short phrase, or None when it can."""
    folded = value.strip().lower()
    if any(marker in folded for marker in _PLACEHOLDER_MARKERS) or folded in _CLASSIC_PLACEHOLDERS:
        return "is a placeholder from an example, not a secret"
    if len(value) < MIN_SECRET_LENGTH:
        return f"is shorter than {MIN_SECRET_LENGTH} characters"
    return None
