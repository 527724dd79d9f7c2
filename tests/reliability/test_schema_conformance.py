"""schemathesis against the real service under gunicorn: every check, anonymous and with a
token, a fixed example budget and seed. The schema must describe every answer the API gives."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from rest_framework_simplejwt.tokens import AccessToken

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

HERE = Path(__file__).resolve().parent
MAX_EXAMPLES = 10
SEED = 20261202


def schemathesis(url: str, *headers: str, workdir: Path) -> subprocess.CompletedProcess:
    command = [
        str(Path(sys.executable).with_name("st")),
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        f"{url}/api/schema/",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--no-shrink",
        "--request-timeout",
        "15",
    ]
    for header in headers:
        command += ["--header", header]
    # Its example cache goes to the working folder: the test's, not the repository.
    return subprocess.run(command, capture_output=True, text=True, timeout=110, cwd=workdir)


def test_schemathesis_finds_nothing_anonymous_and_with_a_token(web_server, tiny_model, tmp_path):
    python_path = os.pathsep.join(
        filter(None, [str(HERE / "offline"), os.environ.get("PYTHONPATH")])
    )
    server = web_server(workers=2, env={"PYTHONPATH": python_path, "WEB_THREADS": "4"})
    user = get_user_model().objects.create_user("schema-test", password="pw-schema-123")
    token = str(AccessToken.for_user(user))

    anonymous = schemathesis(server.url, workdir=tmp_path)
    assert anonymous.returncode == 0, anonymous.stdout[-6000:]
    signed_in = schemathesis(server.url, f"Authorization: Bearer {token}", workdir=tmp_path)
    assert signed_in.returncode == 0, signed_in.stdout[-6000:]
