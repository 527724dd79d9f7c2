"""What 'make run' installs is enough for every documented command, and holds no test tool.

The documented commands themselves run there too (tests/docs/test_documented_commands.py).
These tests run in a virtual environment with the runtime requirements alone
(tests/runtime_env.py builds it once, with 'make install'), not in the test environment that
runs pytest: a package only the test requirements bring would hide a command's failure here.
"""

import json
import os
import subprocess

import pytest

from tests.runtime_env import runtime_python

pytestmark = pytest.mark.slow

# Packages of the test requirements only (their import names).
TEST_ONLY = [
    "pytest",
    "pytest_django",
    "hypothesis",
    "mypy",
    "playwright",
    "schemathesis",
    "skimage",
    "fastapi",
    "litserve",
]
# What the zero-shot registration imports on top of the runtime's own.
REGISTRATION = ["keras_hub", "tensorflow_text", "tensorflow", "keras"]


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
