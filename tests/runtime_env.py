"""The environment a user has after 'make run': the runtime requirements and nothing else.

The test environment (.venv after 'make test') adds the test tools, so a command that works
there may still fail for a user who only ran 'make run'. Tests that prove a documented command
works run it with ``runtime_python()`` instead of ``sys.executable``.
"""

import fcntl
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_VENV = ROOT / "var" / "runtime-venv"
# make's output (pip's) of the last build, kept for when a build fails.
BUILD_LOG = ROOT / "var" / "runtime-venv.log"
BUILD_TIMEOUT = 1800  # seconds: the first build downloads TensorFlow


def runtime_python() -> Path:
    """The python of a virtual environment with only the runtime requirements (what `make run`
    installs: requirements.txt + requirements-nodeps.txt, no test packages), built once by
    `make install VENV=<repo>/var/runtime-venv` and reused while requirements are unchanged."""
    RUNTIME_VENV.parent.mkdir(parents=True, exist_ok=True)
    # make's stamp file decides whether anything is to be done (a no-op when the requirements
    # files are older than it); the lock keeps two test processes from building it at once.
    with (RUNTIME_VENV.parent / "runtime-venv.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        environment = {
            name: value
            for name, value in os.environ.items()
            if name not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "MAKEFLAGS", "MFLAGS"}
        }
        with BUILD_LOG.open("w") as log:
            result = subprocess.run(
                ["make", "--no-print-directory", "install", f"VENV={RUNTIME_VENV}"],
                cwd=ROOT,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=BUILD_TIMEOUT,
                check=False,
            )
        if result.returncode != 0:
            raise RuntimeError(
                f"make install VENV={RUNTIME_VENV} failed ({result.returncode}); its output is "
                f"in {BUILD_LOG}:\n{BUILD_LOG.read_text()[-4000:]}"
            )
    return RUNTIME_VENV / "bin" / "python"
