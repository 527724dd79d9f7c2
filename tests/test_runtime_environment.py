"""What 'make run' installs is enough for every documented command, and holds no test tool.

These tests run in a virtual environment with the runtime requirements alone
(tests/runtime_env.py builds it once, with 'make install'), not in the test environment that
runs pytest: a package only the test requirements bring would hide a command's failure here.
"""

import contextlib
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.loopback import free_port
from tests.runtime_env import ROOT, runtime_python

pytestmark = pytest.mark.slow

README = ROOT / "README.md"
# The zero-shot example of README.md ("Zero-shot models"), command by command as it is written
# there after 'make run' (which migrates first). Each must appear in the README verbatim.
REGISTER = ".venv/bin/python manage.py fetch_model tiny-clip"
MAKE_IMAGE = (
    ".venv/bin/python -c \"from PIL import Image; Image.new('RGB', (48, 40), (220, 30, 30))"
    ".save('red.png')\""
)
MAKE_BODY = (
    """printf '{"image_base64": "%s", "model": "tiny-clip", "labels": ["a cat", "blue square", """
    """"red square"]}' \\\n        "$(base64 -w0 red.png)" > body.json"""
)
CLASSIFY = (
    "curl -s -H 'Content-Type: application/json' -d @body.json http://127.0.0.1:8000/classify-image"
)
# Packages of the test requirements only (their import names).
TEST_ONLY = [
    "pytest",
    "pytest_django",
    "hypothesis",
    "mypy",
    "playwright",
    "schemathesis",
    "skimage",
]
# What the zero-shot registration imports on top of the runtime's own.
REGISTRATION = ["keras_hub", "tensorflow_text", "tensorflow", "keras"]


def runtime_environment(tmp_path: Path) -> dict[str, str]:
    """The user's environment: the runtime venv first on PATH, a SQLite file, a model store and
    a var folder of the test's own, local-memory caches (no REDIS_URL), no export."""
    python = runtime_python()
    ignored = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "REDIS_URL", "ELASTICSEARCH_URL"}
    environment = {k: v for k, v in os.environ.items() if k not in ignored}
    return {
        **environment,
        "PATH": f"{python.parent}{os.pathsep}{environment.get('PATH', '')}",
        "VIRTUAL_ENV": str(python.parent.parent),
        "VAR_DIR": str(tmp_path / "var"),
        "MODEL_STORE": str(tmp_path / "models"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "classifier_site.settings",
    }


def as_run_here(command: str, *, port: int) -> str:
    """A README command for this machine: the runtime venv's python, the test server's port."""
    command = command.replace(".venv/bin/python", str(runtime_python()))
    return command.replace("http://127.0.0.1:8000", f"http://127.0.0.1:{port}")


def shell(command: str, *, cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@contextlib.contextmanager
def served(*, env: dict[str, str], port: int, log_path: Path) -> Iterator[None]:
    """gunicorn as 'make run' starts it, on ``port``, until the block ends."""
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                str(runtime_python().parent / "gunicorn"),
                "--config",
                "python:classifier_site.gunicorn",
                "classifier_site.wsgi",
            ],
            cwd=ROOT,
            env={**env, "PORT": str(port)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            assert process.poll() is None, f"gunicorn stopped: {log_path.read_text()}"
            assert time.monotonic() < deadline, f"gunicorn did not start: {log_path.read_text()}"
            time.sleep(0.2)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_runtime_environment_has_no_test_package_and_every_registration_one():
    probe = (
        "import importlib.util, json, sys; "
        "print(json.dumps({n: importlib.util.find_spec(n) is not None for n in sys.argv[1:]}))"
    )
    result = subprocess.run(
        [str(runtime_python()), "-c", probe, *TEST_ONLY, *REGISTRATION],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    found = json.loads(result.stdout)
    assert [name for name in TEST_ONLY if found[name]] == []
    assert [name for name in REGISTRATION if not found[name]] == []


def test_the_readmes_zero_shot_example_answers_with_the_runtime_requirements_alone(tmp_path):
    readme = README.read_text()
    for command in (REGISTER, MAKE_IMAGE, MAKE_BODY, CLASSIFY):
        assert command in readme, f"README.md no longer shows: {command}"
    env = runtime_environment(tmp_path)
    port = free_port()
    python = runtime_python()
    # 'make run' migrates first; then the README's registration, as written.
    shell(f"{python} manage.py migrate --noinput -v0", cwd=ROOT, env=env)
    registered = shell(as_run_here(REGISTER, port=port), cwd=ROOT, env=env)
    assert re.search(r"Registered tiny-clip v1 \(production\) \(zero-shot", registered), registered

    with served(env=env, port=port, log_path=tmp_path / "gunicorn.log"):
        work = tmp_path / "user"
        work.mkdir()
        shell(as_run_here(MAKE_IMAGE, port=port), cwd=work, env=env)
        shell(as_run_here(MAKE_BODY, port=port), cwd=work, env=env)
        answer = json.loads(shell(as_run_here(CLASSIFY, port=port), cwd=work, env=env))

    assert answer["classification"] == "red square", answer
    assert answer["model"] == {"name": "tiny-clip", "version": 1}
    assert answer["predictions"][0]["label"] == "red square"
    assert sorted(p["label"] for p in answer["predictions"]) == [
        "a cat",
        "blue square",
        "red square",
    ]
    assert answer["cached"] is False
