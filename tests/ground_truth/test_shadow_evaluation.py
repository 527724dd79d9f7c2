"""A staging version shadowed on live production answers: sampled, off the request path,
stored beside production's answer, dropped and counted when the queue is full, and never
changing the answer.

These tests open this process's evaluator without its thread and answer its queue on the test's
own thread (``run_pending``), inside the test's transaction; the last one runs the real server,
whose worker thread does the same.
"""

import base64
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from bench.loopback import serve_files
from classification.caching import reset_result_cache
from classification.models import ModelVersion
from core.metrics import REGISTRY
from core.middleware import requests_in_flight
from ground_truth.models import ShadowPrediction
from ground_truth.shadowing import ShadowEvaluator, shadow_evaluator
from tests.support.images import image_bytes
from tests.support.models import TINY_LABELS
from tests.support.redis import local_cache_settings
from tests.support.waiting import wait_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def staging(register_model, tiny_keras_path, tiny_model) -> ModelVersion:
    """A staging copy of the production 'tiny' model (same artifact, so it agrees)."""
    return register_model(tiny_keras_path, name="tiny", labels=TINY_LABELS, stage="staging")


def shadow_share(version: ModelVersion, share: float) -> ModelVersion:
    version.shadow_share = share
    version.save(update_fields=["shadow_share"])
    return version


@pytest.fixture
def evaluator(settings) -> Iterator[ShadowEvaluator]:
    """This process's evaluator, open (no thread), its sampling seeded; stopped afterwards."""
    settings.MODEL_REFRESH_SECONDS = 0
    found = shadow_evaluator()
    found.random.seed(20261207)
    yield found
    found.stop()


def picture(seed: int) -> bytes:
    return image_bytes(format="PNG", size=(32, 32), color=(seed % 256, (seed * 7) % 256, 90))


def upload(client: APIClient, data: bytes, **headers: str):
    name = f"{uuid.uuid4().hex}.png"
    response = client.post(
        "/classify-image", {"image": _file(data, name)}, format="multipart", headers=headers
    )
    assert response.status_code == 200, response.content
    return response


def _file(data: bytes, name: str) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="image/png")


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_every_answer_is_shadowed_at_share_one(api_client, tiny_model, staging, evaluator):
    shadow_share(staging, 1.0)
    evaluator.open()
    responses = [upload(api_client, picture(seed)) for seed in range(4)]
    responses.append(upload(api_client, picture(0)))  # a cache hit: the bytes are in hand
    responses.append(
        api_client.post(
            "/classify-image",
            {"image_base64": base64.b64encode(picture(9)).decode()},
            format="json",
        )
    )
    assert evaluator.run_pending() == 6

    rows = {row.request_id: row for row in ShadowPrediction.objects.all()}
    assert set(rows) == {response["X-Request-ID"] for response in responses}
    for response in responses:
        row = rows[response["X-Request-ID"]]
        answer = response.json()
        assert row.shadow_version == staging and row.production_version == tiny_model
        assert row.production_label == answer["classification"]
        assert row.production_confidence == answer["confidence"]
        # The same artifact: the shadow answers what production answered.
        assert row.label == answer["classification"] and row.agrees
        assert row.confidence == pytest.approx(answer["confidence"], abs=1e-6)
        assert row.latency_seconds > 0


def test_nothing_is_shadowed_at_share_zero(api_client, staging, evaluator):
    evaluator.open()
    for seed in range(5):
        upload(api_client, picture(seed))
    assert len(evaluator) == 0 and evaluator.run_pending() == 0
    assert not ShadowPrediction.objects.exists()


def test_a_tenth_of_the_answers_are_shadowed_at_share_one_tenth(api_client, staging, evaluator):
    shadow_share(staging, 0.1)
    evaluator.open()
    for seed in range(200):
        upload(api_client, picture(seed % 20))
    shadowed = evaluator.run_pending()
    assert ShadowPrediction.objects.count() == shadowed
    # Binomial(200, 0.1): mean 20, sd 4.2; this bound is 3.5 sd either side (and the draws are
    # seeded, so the test cannot flake).
    assert 5 <= shadowed <= 35


def test_errors_and_other_models_are_not_shadowed(api_client, staging, evaluator):
    shadow_share(staging, 1.0)
    evaluator.open()
    refused = api_client.post(
        "/classify-image", {"image": _file(b"not an image", "x.png")}, format="multipart"
    )
    assert refused.status_code in (415, 422)
    assert evaluator.run_pending() == 0


def test_a_url_answer_is_shadowed_with_the_bytes_it_fetched_and_a_url_hit_is_not(
    api_client, settings, staging, evaluator
):
    settings.IMAGE_FETCH_PRIVATE_ALLOWLIST = ["127.0.0.1/32"]
    shadow_share(staging, 1.0)
    evaluator.open()
    with serve_files({"/red.png": picture(3)}, content_type="image/png") as images:
        body = {"image_url": f"{images.url}/red.png"}
        fetched = api_client.post("/classify-image", body, format="json")
        hit = api_client.post("/classify-image", body, format="json")
    assert fetched.status_code == hit.status_code == 200
    assert hit.json()["cached"]
    assert evaluator.run_pending() == 1
    (row,) = ShadowPrediction.objects.all()
    assert row.request_id == fetched["X-Request-ID"]


def test_answers_are_the_same_with_and_without_shadowing(api_client, settings, staging, evaluator):
    evaluator.open()

    def answers() -> list[dict]:
        # A fresh cache each round, so both rounds compute every answer.
        settings.CACHES = local_cache_settings()
        reset_result_cache()
        found = []
        for seed in range(6):
            response = upload(api_client, picture(seed), **{"X-Request-ID": f"same-{seed}"})
            answer = response.json()
            answer.pop("processing_time")  # the one field that is a measurement
            found.append((dict(response.headers), answer))
        return found

    plain = answers()
    shadow_share(staging, 1.0)
    evaluator.refresh(force=True)
    shadowed = answers()
    assert evaluator.run_pending() == 6
    assert [answer for _, answer in shadowed] == [answer for _, answer in plain]
    assert [headers["X-Request-ID"] for headers, _ in shadowed] == [
        f"same-{seed}" for seed in range(6)
    ]
    assert [headers["Content-Type"] for headers, _ in shadowed] == [
        headers["Content-Type"] for headers, _ in plain
    ]


def test_a_full_queue_drops_and_counts_without_failing_answers(
    api_client, settings, staging, evaluator
):
    settings.SHADOW_QUEUE_SIZE = 2
    shadow_share(staging, 1.0)
    evaluator.open()
    dropped = {"model": "tiny", "version": str(staging.version)}
    before = metric("classifier_shadow_dropped_total", **dropped)
    counted = evaluator.dropped
    for seed in range(5):
        upload(api_client, picture(seed))  # 200 every time: the answer never waits
    assert len(evaluator) == 2
    assert metric("classifier_shadow_dropped_total", **dropped) - before == 3
    assert evaluator.dropped - counted == 3
    assert evaluator.run_pending() == 2
    assert metric("classifier_shadow_queue_depth") == 0


def test_a_version_that_will_not_load_is_counted_and_answers_go_on(api_client, staging, evaluator):
    shadow_share(staging, 1.0)
    ModelVersion.objects.filter(pk=staging.pk).update(artifact_sha256="0" * 64)
    evaluator.open()
    labels = {"model": "tiny", "version": str(staging.version), "reason": "load"}
    before = metric("classifier_shadow_errors_total", **labels)
    for seed in range(3):
        upload(api_client, picture(seed))
    assert evaluator.run_pending() == 0
    assert metric("classifier_shadow_errors_total", **labels) - before == 3
    assert not ShadowPrediction.objects.exists()


def test_a_version_no_longer_staging_is_no_longer_shadowed(api_client, staging, evaluator):
    shadow_share(staging, 1.0)
    evaluator.open()
    upload(api_client, picture(1))
    ModelVersion.objects.filter(pk=staging.pk).update(stage=ModelVersion.Stage.ARCHIVED)
    evaluator.refresh(force=True)
    upload(api_client, picture(2))
    assert evaluator.run_pending() == 1


def test_the_admin_sets_a_versions_shadow_share(client, django_user_model, staging):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")
    client.force_login(admin)
    page = f"/admin/classification/modelversion/{staging.pk}/change/"
    assert 'name="shadow_share"' in client.get(page).content.decode()
    response = client.post(page, {"shadow_share": "0.25"})
    assert response.status_code == 302, response.content.decode()[:2000]
    staging.refresh_from_db()
    assert staging.shadow_share == 0.25
    refused = client.post(page, {"shadow_share": "1.5"})
    assert refused.status_code == 200  # the form again, with its error
    staging.refresh_from_db()
    assert staging.shadow_share == 0.25


@pytest.mark.slow
def test_the_servers_worker_thread_shadows_live_traffic(web_server, tiny_model, staging):
    shadow_share(staging, 1.0)
    server = web_server(workers=1)
    ids = []
    for seed in range(8):
        boundary = "shadow-test"
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
            f'filename="x.png"\r\nContent-Type: image/png\r\n\r\n'
        ).encode()
        body += picture(seed) + f"\r\n--{boundary}--\r\n".encode()
        request = urllib.request.Request(
            f"{server.url}/classify-image",
            data=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 200
            ids.append(response.headers["X-Request-ID"])
    # Written by the worker's shadow thread, off the request path.
    wait_for(lambda: ShadowPrediction.objects.count() == len(ids), timeout=60)
    rows = ShadowPrediction.objects.all()
    assert {row.request_id for row in rows} == set(ids)
    assert all(row.agrees and row.shadow_version_id == staging.pk for row in rows)


def test_images_past_the_queues_byte_bound_are_dropped(api_client, settings, staging, evaluator):
    settings.SHADOW_QUEUE_MAX_BYTES = len(picture(0)) * 2 + 10  # room for two of them
    shadow_share(staging, 1.0)
    evaluator.open()
    dropped = evaluator.dropped
    for seed in range(4):
        upload(api_client, picture(seed))
    assert len(evaluator) == 2 and evaluator.dropped - dropped == 2
    assert evaluator.run_pending() == 2
    upload(api_client, picture(5))  # the room is given back once answered
    assert len(evaluator) == 1


@pytest.mark.django_db(transaction=True)
def test_the_thread_shadows_only_while_no_request_is_answered(api_client, settings, staging):
    """Shadow work waits for an idle worker: while a request is in flight the image stays
    queued, and once none is it is answered."""
    settings.MODEL_REFRESH_SECONDS = 0
    shadow_share(staging, 1.0)
    evaluator = shadow_evaluator()
    evaluator.start()
    try:
        requests_in_flight.enter()  # a request this worker is still answering
        try:
            upload(api_client, picture(3))
            wait_for(lambda: len(evaluator) == 1)
            # The thread has had time to take the image, had the worker been idle.
            assert not requests_in_flight.wait_idle(timeout=1.0)
            assert len(evaluator) == 1
            assert ShadowPrediction.objects.count() == 0
        finally:
            requests_in_flight.leave()
        wait_for(lambda: ShadowPrediction.objects.count() == 1)
        assert len(evaluator) == 0
    finally:
        evaluator.stop()
