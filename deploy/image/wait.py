"""The image's start-up gate: `classifier-wait database` or `classifier-wait setup`.

database  waits until the database accepts a connection (a PostgreSQL container still starting,
          a managed database failing over), so that `setup` does not die on its first try;
setup     waits until the schema is current (`migrate --check`: no unapplied migration) and
          every model of MODEL_MANIFEST is registered: what the `setup` job does, seen from a
          web server that must not serve before it (compose's web services, a Kubernetes init
          container).

Each wait is bounded by STARTUP_WAIT_TIMEOUT seconds (default 120): past it the command exits 1
saying what it waited for, so an orchestrator restarts or reports the container instead of a
server answering 500s on a missing table. Health gates cannot do this job everywhere: podman
without systemd never runs healthchecks, so compose's `service_healthy` would never pass there.
"""

import json
import os
import sys
import time
from pathlib import Path

POLL_SECONDS = 1.0


def _timeout() -> float:
    raw = os.environ.get("STARTUP_WAIT_TIMEOUT", "").strip()
    try:
        return float(raw) if raw else 120.0
    except ValueError:
        sys.exit(f"STARTUP_WAIT_TIMEOUT must be a number of seconds, not {raw!r}")


def _manifest_names() -> set[str]:
    path = os.environ.get("MODEL_MANIFEST", "")
    if not path or not Path(path).is_file():
        return set()
    return {entry["name"] for entry in json.loads(Path(path).read_text())["versions"]}


def _missing(what: str) -> str | None:
    """What is not there yet (a sentence), or None when the wait is over."""
    # Imported here: Django's modules need django.setup(), which main() runs first.
    from django.db import DatabaseError, connection
    from django.db.migrations.executor import MigrationExecutor

    try:
        connection.ensure_connection()
        if what == "database":
            return None
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
        if plan:
            return f"{len(plan)} migrations not applied yet (the setup job applies them)"
        from classification.models import ModelVersion

        wanted = _manifest_names()
        registered = set(
            ModelVersion.objects.filter(name__in=wanted).values_list("name", flat=True)
        )
        if wanted - registered:
            return f"baked models not registered yet: {', '.join(sorted(wanted - registered))}"
        return None
    except DatabaseError as exc:
        connection.close()  # a broken connection is not reused by the next try
        return f"the database does not answer: {str(exc).strip().splitlines()[0]}"


def main() -> int:
    what = sys.argv[1] if len(sys.argv) == 2 else ""
    if what not in {"database", "setup"}:
        print("usage: classifier-wait database|setup", file=sys.stderr)
        return 2
    sys.path.insert(0, os.environ.get("APP_DIR", "/app"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "classifier_site.settings")
    import django

    django.setup()
    timeout = _timeout()
    deadline = time.monotonic() + timeout
    said = ""
    while (missing := _missing(what)) is not None:
        if missing != said:  # one line per change of state, not one per poll
            print(f"Waiting ({what}): {missing}", flush=True)
            said = missing
        if time.monotonic() >= deadline:
            print(f"Gave up after {timeout:g} s (STARTUP_WAIT_TIMEOUT): {missing}", file=sys.stderr)
            return 1
        time.sleep(POLL_SECONDS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
