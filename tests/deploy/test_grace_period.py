"""One grace figure: the server's graceful stop (WEB_GRACEFUL_TIMEOUT) is shorter than every
stop timeout written around it, so nothing kills a request the server would still finish."""

import os
import re
import subprocess
import sys

import yaml
from django.conf import settings

from core.lifecycle import GRACEFUL_TIMEOUT_DEFAULT
from tests.support.paths import ROOT

STOP_TIMEOUT = re.compile(r"--stop-timeout[ =](\d+)")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


def duration_seconds(text: str) -> float:
    """A compose duration ('30s', '1m30s') in seconds."""
    parts = _DURATION_PART.findall(text)
    assert "".join(number + unit for number, unit in parts) == text, text
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def test_compose_durations_are_read_as_compose_writes_them():
    assert duration_seconds("30s") == 30
    assert duration_seconds("1m30s") == 90


def test_the_setting_defaults_to_the_figure_both_servers_use():
    assert GRACEFUL_TIMEOUT_DEFAULT == 20
    if "WEB_GRACEFUL_TIMEOUT" not in os.environ:
        assert settings.WEB_GRACEFUL_TIMEOUT == GRACEFUL_TIMEOUT_DEFAULT


def test_gunicorn_takes_its_graceful_timeout_from_the_environment(tmp_path):
    code = "import classifier_site.gunicorn as g; print(g.graceful_timeout)"
    base = {
        "PYTHONPATH": str(ROOT),
        "PATH": "/usr/bin:/bin",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
    }

    def graceful(**env: str) -> str:
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={**base, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return result.stdout.strip()

    assert graceful() == str(GRACEFUL_TIMEOUT_DEFAULT)
    assert graceful(WEB_GRACEFUL_TIMEOUT="37") == "37"


def test_every_compose_service_running_the_server_waits_longer_than_its_graceful_stop():
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    servers = {
        name: service
        for name, service in compose["services"].items()
        if service.get("command") == ["web"]
    }
    assert {"web", "web-2"} <= set(servers)
    for name, service in servers.items():
        graceful = float(
            service["environment"].get("WEB_GRACEFUL_TIMEOUT", GRACEFUL_TIMEOUT_DEFAULT)
        )
        assert graceful >= GRACEFUL_TIMEOUT_DEFAULT, name
        assert duration_seconds(service["stop_grace_period"]) > graceful, name


def test_every_documented_stop_timeout_exceeds_the_graceful_stop():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    found = {
        page.relative_to(ROOT).as_posix(): [int(s) for s in STOP_TIMEOUT.findall(page.read_text())]
        for page in pages
    }
    assert found["README.md"] and found["docs/deployment.md"]
    short = {
        page: timeouts
        for page, timeouts in found.items()
        if min(timeouts, default=99) <= GRACEFUL_TIMEOUT_DEFAULT
    }
    assert short == {}
