"""Model monitoring end to end: reference profiles, drift of real traffic, page, command,
metrics."""

import base64
import io
import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from classification.models import ModelVersion
from reporting.models import RequestLog
from reporting.monitoring.metrics import ModelMonitoringCollector
from reporting.monitoring.selectors import (
    model_drift_compare,
    model_drift_current,
    monitoring_window,
)
from reporting.monitoring.services import model_monitoring_refresh
from tests.support.images import encode, image_bytes, noise_image
from tests.support.models import TINY_LABELS
from tests.support.reporting import log_row

pytestmark = pytest.mark.django_db
STATISTICS = "/admin/reporting/requestlog/statistics/"


def reddish(seed: int) -> bytes:
    r, g, b = np.random.default_rng(seed).integers([170, 0, 0], [256, 80, 80])
    return image_bytes(format="PNG", color=(int(r), int(g), int(b)))


def bluish(seed: int) -> bytes:
    r, g, b = np.random.default_rng(seed).integers([0, 0, 170], [80, 80, 256])
    return image_bytes(format="PNG", color=(int(r), int(g), int(b)))


def send(api_client, data: bytes) -> dict:
    response = api_client.post(
        "/classify-image", {"image_base64": base64.b64encode(data).decode()}, format="json"
    )
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture(autouse=True)
def _monitoring_settings(settings):
    settings.MONITORING_MIN_REQUESTS = 10
    settings.MONITORING_LOW_CONFIDENCE = 0.4
    settings.MONITORING_PSI_NOTICE = 0.1
    settings.MONITORING_PSI_WARNING = 0.25
    settings.MONITORING_LOW_CONFIDENCE_RISE = 0.1


@pytest.fixture
def reference_dir(tmp_path: Path) -> Path:
    """Twelve reddish 64 x 48 images, and a file that is not an image."""
    folder = tmp_path / "reference"
    folder.mkdir()
    for seed in range(12):
        (folder / f"red-{seed:02}.png").write_bytes(reddish(seed))
    (folder / "README.txt").write_text("not an image")
    return folder


@pytest.fixture
def profiled_model(tiny_model, reference_dir: Path) -> ModelVersion:
    call_command("model_profile", "tiny", str(tiny_model.version), "--images", str(reference_dir))
    tiny_model.refresh_from_db()
    return tiny_model


@pytest.fixture
def drifted_traffic(api_client, profiled_model) -> None:
    """Recent traffic unlike the reference: bluish photos and larger noise images."""
    for seed in range(10):
        send(api_client, bluish(seed))
    for seed in range(4):
        send(api_client, encode(noise_image(seed=seed)))


def current(name: str = "tiny"):
    (drift,) = [d for d in model_drift_current() if d.model_name == name]
    return drift


# --- Input statistics in the log ------------------------------------------------------------


def test_answers_log_image_size_and_brightness_also_when_cached(api_client, tiny_model):
    first = send(api_client, image_bytes(format="PNG", size=(64, 48), color=(255, 255, 255)))
    second = send(api_client, image_bytes(format="PNG", size=(64, 48), color=(255, 255, 255)))
    assert first["cached"] is False and second["cached"] is True
    rows = list(RequestLog.objects.order_by("id"))
    for row in rows:
        assert (row.image_width, row.image_height) == (64, 48)
        assert row.image_brightness == pytest.approx(255.0, abs=0.01)
    assert rows[1].cached is True


def test_errors_log_no_input_statistics(api_client, tiny_model):
    response = api_client.post("/classify-image", {"image_base64": "aGVsbG8="}, format="json")
    assert response.status_code == 415
    row = RequestLog.objects.get()
    assert row.image_width is None and row.image_brightness is None


# --- Reference profiles ---------------------------------------------------------------------


def test_a_reference_profile_is_built_from_a_reference_image_set(tiny_model, reference_dir):
    err = io.StringIO()
    call_command(
        "model_profile",
        "tiny",
        "1",
        "--images",
        str(reference_dir),
        stdout=io.StringIO(),
        stderr=err,
    )
    profile = ModelVersion.objects.get(pk=tiny_model.pk).reference_profile
    assert profile["source"] == "images" and profile["count"] == 12
    assert sum(profile["labels"].values()) == 12
    assert set(profile["labels"]) <= set(TINY_LABELS)
    assert sum(profile["confidence"]) == 12 and len(profile["confidence_sample"]) == 12
    assert profile["means"]["width"] == 64 and profile["means"]["height"] == 48
    assert 80 < profile["means"]["brightness"] < 120  # reddish: luma about 85-110
    assert profile["image_size"][0] == 12  # 3,072 px each
    assert "README.txt" in err.getvalue()


def test_promotion_with_reference_images_stores_the_profile(
    tiny_model, register_model, tiny_keras_path, reference_dir, tmp_path, settings
):
    settings.PROMOTION_MIN_SHADOWED = 0  # the gate (ground_truth's tests) lets it through
    staged = register_model(tiny_keras_path, name="tiny", labels=TINY_LABELS, stage="staging")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CommandError, match="No image"):
        call_command("promote_model", "tiny", str(staged.version), "--reference-images", str(empty))
    staged.refresh_from_db()
    assert staged.stage == "staging" and staged.reference_profile is None

    call_command(
        "promote_model",
        "tiny",
        str(staged.version),
        "--reference-images",
        str(reference_dir),
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )
    staged.refresh_from_db()
    assert staged.stage == "production"
    assert staged.reference_profile["source"] == "images"
    assert staged.reference_profile["count"] == 12


def test_without_images_the_first_n_answers_become_the_reference(api_client, settings, tiny_model):
    settings.MONITORING_REFERENCE_REQUESTS = 5
    log_row(at=tiny_model.promoted_at - timedelta(hours=1), label="before-promotion")
    for seed in range(4):
        send(api_client, reddish(seed))
    model_monitoring_refresh()
    assert ModelVersion.objects.get(pk=tiny_model.pk).reference_profile is None

    for seed in range(4, 7):
        send(api_client, bluish(seed))
    (drift,) = model_monitoring_refresh()
    profile = ModelVersion.objects.get(pk=tiny_model.pk).reference_profile
    assert profile["source"] == "requests" and profile["count"] == 5
    assert "before-promotion" not in profile["labels"]
    assert sum(profile["labels"].values()) == 5
    assert profile["image_size"][0] == 5 and profile["means"]["width"] == 64
    assert drift.reference == profile and drift.recent_count == 7


def test_a_profile_from_requests_can_be_rebuilt_by_command(api_client, tiny_model):
    for seed in range(3):
        send(api_client, reddish(seed))
    with pytest.raises(CommandError, match="fewer than 4"):
        call_command("model_profile", "tiny", "1", "--from-requests", "4")
    call_command("model_profile", "tiny", "1", "--from-requests", "3", stdout=io.StringIO())
    assert ModelVersion.objects.get(pk=tiny_model.pk).reference_profile["count"] == 3


# --- The comparison ---------------------------------------------------------------------------


def test_traffic_like_the_reference_crosses_no_threshold(api_client, profiled_model, reference_dir):
    for path in sorted(reference_dir.glob("*.png")):
        send(api_client, path.read_bytes())
    drift = current()
    assert drift.recent_count == 12
    assert drift.psi == {"labels": 0.0, "confidence": 0.0, "brightness": 0.0, "image_size": 0.0}
    assert drift.status == "ok" and drift.findings == []


def test_drift_rises_when_traffic_is_unlike_the_reference(drifted_traffic):
    drift = current()
    assert drift.recent_count == 14
    assert drift.psi["brightness"] >= 0.25  # darker bluish images, mid-grey noise
    assert drift.psi["image_size"] >= 0.25  # 160 x 160 noise among 64 x 48 photos
    assert drift.psi["confidence"] >= 0.25  # the tiny model is less sure of bluish images
    assert drift.recent_low_confidence_share > drift.reference_low_confidence_share + 0.1
    assert drift.status == "warning" and drift.alert_level == 2
    assert any("image brightness has shifted" in message for message in drift.warnings)
    assert any("confidence below 0.4" in message for message in drift.warnings)


def test_too_few_recent_answers_raise_no_warning(api_client, profiled_model):
    for seed in range(3):
        send(api_client, bluish(seed))
    drift = current()
    assert drift.psi["brightness"] >= 0.25
    assert drift.status == "too_few_requests" and drift.findings == []


def test_a_model_without_reference_is_reported_as_such(api_client, tiny_model):
    send(api_client, reddish(0))
    drift = current()
    assert drift.status == "no_reference" and drift.recent_count == 1
    assert drift.psi["labels"] is None


def test_the_comparison_takes_two_queries_however_many_models(
    django_assert_num_queries, drifted_traffic, register_model, tiny_keras_path
):
    other = register_model(tiny_keras_path, name="tiny-b", labels=TINY_LABELS)
    since, until = monitoring_window()
    versions = list(ModelVersion.objects.filter(stage="production"))
    with django_assert_num_queries(2):
        drifts = model_drift_compare(model_versions=versions, since=since, until=until)
    assert {d.model_name for d in drifts} == {"tiny", "tiny-b"}
    with django_assert_num_queries(3):
        model_drift_current()
    # tiny-b has no profile and too few answers: one more query to look for them.
    with django_assert_num_queries(5):
        model_monitoring_refresh()
    other.refresh_from_db()
    assert other.reference_profile is None


# --- Where people see it ------------------------------------------------------------------------


def test_staff_see_the_drift_warning_on_the_statistics_page(client, admin_user, drifted_traffic):
    client.force_login(admin_user)
    page = client.get(STATISTICS).content.decode()
    assert "Model monitoring" in page
    assert '<li class="warning">tiny v1: the image brightness has shifted' in page
    assert "share of answers by label" in page  # the reference-vs-recent chart
    assert "12 reference images" in page


def test_the_statistics_page_says_when_there_is_no_reference(client, admin_user, tiny_model):
    client.force_login(admin_user)
    page = client.get(STATISTICS).content.decode()
    assert "No reference profile yet" in page
    assert 'class="warning"' not in page


def test_model_report_prints_the_comparison_as_a_table(drifted_traffic):
    out = io.StringIO()
    call_command("model_report", "--model", "tiny", stdout=out)
    text = out.getvalue()
    assert "Model tiny v1" in text and "12 reference images" in text
    assert "Recent:    14 answers" in text
    for row in ["label distribution", "top-1 confidence distribution", "image brightness"]:
        assert row in text
    assert "Status: WARNING" in text and "image brightness has shifted" in text


def test_model_report_prints_json_for_a_time_range(drifted_traffic):
    out = io.StringIO()
    call_command("model_report", "--model", "tiny", "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert report["status"] == "warning" and report["recent"]["count"] == 14
    assert report["psi"]["brightness"] >= 0.25
    assert report["reference"]["source"] == "images"

    out = io.StringIO()
    call_command(
        "model_report",
        "--model=tiny",
        "--since=2020-01-01T00:00:00",
        "--until=2020-01-02T00:00:00",
        "--json",
        stdout=out,
    )
    report = json.loads(out.getvalue())
    assert report["recent"]["count"] == 0 and report["status"] == "too_few_requests"
    assert report["since"].startswith("2020-01-01")


def test_model_report_refuses_unknown_models_and_empty_ranges(tiny_model):
    with pytest.raises(CommandError, match="no production version"):
        call_command("model_report", "--model", "nope")
    with pytest.raises(CommandError, match="before"):
        call_command(
            "model_report", "--model=tiny", "--since=2020-01-02T00:00", "--until=2020-01-01T00:00"
        )


def _samples(registry: CollectorRegistry) -> dict[tuple, float]:
    """Exposition text parsed into {(name, label=value, ...): value}."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, *sorted(f"{k}={v}" for k, v in sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_metrics_collector_exposes_the_comparison(settings, api_client, profiled_model):
    settings.MONITORING_METRICS_SECONDS = 0
    registry = CollectorRegistry()
    registry.register(ModelMonitoringCollector())
    brightness = (
        "classifier_model_drift_psi",
        "distribution=brightness",
        "model=tiny",
        "version=1",
    )
    alert = ("classifier_model_drift_alert_level", "model=tiny", "version=1")
    recent = "model=tiny", "population=recent", "version=1"  # label pairs, sorted

    for seed in range(12):
        send(api_client, reddish(seed))
    before = _samples(registry)
    assert before[brightness] == 0.0
    assert before[alert] == 0
    assert before[("classifier_model_monitoring_answers", *recent)] == 12

    for seed in range(20):
        send(api_client, bluish(seed))
    after = _samples(registry)
    assert after[brightness] >= 0.25
    assert after[alert] == 2
    assert after[("classifier_model_monitoring_answers", *recent)] == 32
    low_share = ("classifier_model_low_confidence_share", *recent)
    assert after[low_share] > before[low_share]


def test_metrics_endpoint_serves_the_drift_gauges(settings, api_client, profiled_model):
    from reporting.monitoring.metrics import monitoring_collector

    settings.MONITORING_METRICS_SECONDS = 0
    monitoring_collector.reset()
    for seed in range(20):
        send(api_client, bluish(seed))
    text = api_client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    (alert,) = families["classifier_model_drift_alert_level"].samples
    assert alert.labels == {"model": "tiny", "version": "1"}
    assert alert.value == 2


# --- Tag rates of multi-task versions --------------------------------------------------------


def send_tagged(api_client, data: bytes) -> dict:
    response = api_client.post(
        "/classify-image",
        {"image_base64": base64.b64encode(data).decode(), "model": "tiny-tags"},
        format="json",
    )
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture
def mixed_reference_dir(tmp_path: Path) -> Path:
    """Eight reddish and four bluish images: the tag 'warm' on 2/3 of them, 'cool' on 1/3."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    for seed in range(8):
        (folder / f"red-{seed:02}.png").write_bytes(reddish(seed))
    for seed in range(4):
        (folder / f"blue-{seed:02}.png").write_bytes(bluish(seed))
    return folder


@pytest.fixture
def profiled_tags_model(tiny_multi_task_model, mixed_reference_dir: Path) -> ModelVersion:
    call_command(
        "model_profile",
        "tiny-tags",
        str(tiny_multi_task_model.version),
        "--images",
        str(mixed_reference_dir),
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )
    tiny_multi_task_model.refresh_from_db()
    return tiny_multi_task_model


@pytest.fixture
def cool_traffic(api_client, profiled_tags_model) -> None:
    """Recent traffic with more 'cool' tags than the reference: 3 reddish, 9 bluish photos."""
    for seed in range(3):
        send_tagged(api_client, reddish(100 + seed))
    for seed in range(9):
        send_tagged(api_client, bluish(100 + seed))


def test_a_multi_task_reference_profile_keeps_the_tag_rates(profiled_tags_model):
    profile = profiled_tags_model.reference_profile
    assert profile["count"] == 12
    assert profile["tags"] == {"answers": 12, "present": {"warm": 8, "cool": 4}}


def test_a_classifier_profile_has_no_tag_rates(profiled_model):
    assert "tags" not in profiled_model.reference_profile
    assert current().tag_rows() == []


def test_tag_rates_like_the_reference_cross_no_threshold(
    api_client, profiled_tags_model, mixed_reference_dir
):
    for path in sorted(mixed_reference_dir.glob("*.png")):
        send_tagged(api_client, path.read_bytes())
    drift = current("tiny-tags")
    assert drift.recent_tag_answers == 12
    assert drift.tag_rows() == [
        ("warm", pytest.approx(2 / 3), pytest.approx(2 / 3), 0.0),
        ("cool", pytest.approx(1 / 3), pytest.approx(1 / 3), 0.0),
    ]
    assert drift.status == "ok" and drift.findings == []


def test_a_tag_rate_that_moves_raises_a_warning(cool_traffic):
    drift = current("tiny-tags")
    rows = {tag: (ref, recent, value) for tag, ref, recent, value in drift.tag_rows()}
    assert rows["cool"][:2] == (pytest.approx(1 / 3), pytest.approx(0.75))
    assert rows["warm"][:2] == (pytest.approx(2 / 3), pytest.approx(0.25))
    # Two bins, present and absent: (0.75 - 1/3) ln(0.75 / (1/3)) + (0.25 - 2/3) ln(0.25 / (2/3))
    expected = (0.75 - 1 / 3) * np.log(0.75 * 3) + (0.25 - 2 / 3) * np.log(0.25 * 1.5)
    assert rows["cool"][2] == pytest.approx(expected) == pytest.approx(rows["warm"][2])
    assert rows["cool"][2] >= 0.25
    assert drift.status == "warning"
    assert any(
        "the rate of the tag 'cool' has shifted from the reference: 75% of answers against 33%"
        in message
        for message in drift.warnings
    )
    report = drift.as_dict()
    assert report["recent_tag_answers"] == 12
    assert [tag["label"] for tag in report["tags"]] == ["warm", "cool"]
    assert report["tags"][1]["recent_rate"] == 0.75


def test_without_images_the_first_answers_give_the_reference_tag_rates(
    api_client, settings, tiny_multi_task_model
):
    settings.MONITORING_REFERENCE_REQUESTS = 4
    for seed in range(3):
        send_tagged(api_client, reddish(seed))
    send_tagged(api_client, bluish(0))
    model_monitoring_refresh()
    profile = ModelVersion.objects.get(pk=tiny_multi_task_model.pk).reference_profile
    assert profile["source"] == "requests"
    assert profile["tags"] == {"answers": 4, "present": {"warm": 3, "cool": 1}}


def test_tag_rates_keep_the_comparison_at_two_queries(
    django_assert_num_queries, cool_traffic, drifted_traffic
):
    since, until = monitoring_window()
    versions = list(ModelVersion.objects.filter(stage="production").order_by("name"))
    assert [v.name for v in versions] == ["tiny", "tiny-tags"]
    with django_assert_num_queries(2):
        tiny, tagged = model_drift_compare(model_versions=versions, since=since, until=until)
    assert tiny.tag_rows() == [] and tiny.recent_count == 14
    assert tagged.recent_tag_answers == 12 and tagged.recent_tags == {"warm": 3, "cool": 9}


def test_staff_see_the_tag_rates_on_the_statistics_page(client, admin_user, cool_traffic):
    client.force_login(admin_user)
    page = client.get(STATISTICS).content.decode()
    assert "<h3>tiny-tags v1</h3>" in page
    assert '<li class="warning">tiny-tags v1: the rate of the tag &#x27;cool&#x27; has shifted' in (
        page
    )
    assert "<th>recent rate</th>" in page
    assert "<tr><th>cool</th>\n          <td>33 %</td>\n          <td>75 %</td>" in page


def test_model_report_prints_the_tag_rates(cool_traffic):
    out = io.StringIO()
    call_command("model_report", "--model", "tiny-tags", stdout=out)
    text = out.getvalue()
    assert "tag (share of answers present)" in text
    cool = next(line for line in text.splitlines() if line.startswith("cool "))
    assert cool.split() == ["cool", "33.3%", "75.0%", f"{current('tiny-tags').tag_psi['cool']:.3f}"]


def test_the_metrics_collector_exposes_the_tag_rates(settings, cool_traffic):
    settings.MONITORING_METRICS_SECONDS = 0
    registry = CollectorRegistry()
    registry.register(ModelMonitoringCollector())
    samples = _samples(registry)
    recent, reference = (
        ("classifier_model_tag_rate", "model=tiny-tags", f"population={population}", "tag=cool",
         "version=1")
        for population in ("recent", "reference")
    )  # fmt: skip
    assert samples[recent] == 0.75
    assert samples[reference] == pytest.approx(1 / 3)
    psi = ("classifier_model_tag_drift_psi", "model=tiny-tags", "tag=cool", "version=1")
    assert samples[psi] >= 0.25
    assert samples[("classifier_model_drift_alert_level", "model=tiny-tags", "version=1")] == 2
