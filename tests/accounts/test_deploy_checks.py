import os
import secrets
import subprocess
import sys

import pytest

from accounts.checks import check_jwt_signing_key, check_secret_key
from tests.support.paths import ROOT

# The production settings docs/accounts.md documents for 'manage.py check --deploy'.
PRODUCTION_ENV = {
    "PRODUCTION": "1",
    "DEBUG": "0",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "JWT_SIGNING_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "classifier.example.com",
}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    # Start from this environment without any security knob, so only `env` decides.
    base = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SECURE_", "SESSION_", "CSRF_", "JWT_", "DEBUG", "PRODUCTION"))
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_deploy_check_passes_with_the_documented_production_settings():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION_ENV)

    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_the_deploy_check_refuses_the_secret_key_as_jwt_signing_key():
    env = {**PRODUCTION_ENV, "JWT_SIGNING_KEY": PRODUCTION_ENV["SECRET_KEY"]}

    result = manage("check", "--deploy", env=env)

    assert result.returncode != 0
    assert "accounts.E002" in result.stderr


def test_production_without_a_jwt_signing_key_does_not_start():
    env = {key: value for key, value in PRODUCTION_ENV.items() if key != "JWT_SIGNING_KEY"}

    result = manage("check", env=env)

    assert result.returncode != 0
    assert "JWT_SIGNING_KEY must be set when PRODUCTION=1" in result.stderr


# Values a production pod must never start with: the example files' placeholders, Django's
# startproject key, a classic word, and a random but short key.
WEAK_SECRETS = {
    "example-placeholder": "CHANGE-ME-50-random-characters",
    "placeholder-inside": "x" * 40 + "-Change-Me-" + "y" * 40,
    "django-insecure": "django-insecure-" + secrets.token_urlsafe(50),
    "classic": "changeme",
    "short": secrets.token_urlsafe(20),
}


@pytest.mark.parametrize("variable", ["SECRET_KEY", "JWT_SIGNING_KEY"])
@pytest.mark.parametrize("value", WEAK_SECRETS.values(), ids=WEAK_SECRETS.keys())
def test_production_with_a_weak_secret_does_not_start(variable, value):
    result = manage("check", env={**PRODUCTION_ENV, variable: value})

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert f"{variable} is" in result.stderr
    assert value not in result.stderr  # the refusal names the variable, not the value


def test_development_still_starts_with_a_short_secret_key():
    result = manage("check", env={"SECRET_KEY": "short", "DEBUG": "1"})

    assert result.returncode == 0, result.stderr


def test_the_deploy_check_reports_a_placeholder_secret_key_as_an_error():
    env = {
        "SECRET_KEY": WEAK_SECRETS["example-placeholder"],
        "JWT_SIGNING_KEY": secrets.token_urlsafe(50),
    }

    result = manage("check", "--deploy", env=env)

    assert result.returncode != 0
    assert "accounts.E004" in result.stderr


@pytest.mark.parametrize("value", WEAK_SECRETS.values(), ids=WEAK_SECRETS.keys())
def test_the_secret_key_check_refuses_each_weak_key(settings, value):
    settings.SECRET_KEY = value

    assert [error.id for error in check_secret_key(None)] == ["accounts.E004"]


def test_the_secret_key_check_accepts_a_long_random_key(settings):
    settings.SECRET_KEY = secrets.token_urlsafe(50)

    assert check_secret_key(None) == []


@pytest.mark.parametrize(
    ("signing_key", "error_id"),
    [
        ("", "accounts.E001"),
        ("same-as-secret", "accounts.E002"),
        ("short", "accounts.E003"),
        ("CHANGE-ME-50-random-characters-CHANGE-ME-50-random-characters", "accounts.E003"),
    ],
)
def test_the_signing_key_check_names_each_weak_key(settings, signing_key, error_id):
    settings.SECRET_KEY = "same-as-secret"
    settings.SIMPLE_JWT = {**settings.SIMPLE_JWT, "SIGNING_KEY": signing_key}

    assert [error.id for error in check_jwt_signing_key(None)] == [error_id]


def test_the_signing_key_check_accepts_a_long_key_of_its_own(settings):
    settings.SIMPLE_JWT = {**settings.SIMPLE_JWT, "SIGNING_KEY": secrets.token_urlsafe(50)}

    assert check_jwt_signing_key(None) == []
