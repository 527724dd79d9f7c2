"""int8 versions: quantize_model registers a full-integer LiteRT version of a float classifier
beside it, calibrated on the photos wheels ship, served with the softmax in float, with its
fidelity report against the float version in its metrics. One conversion per session."""

import io

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command

from classification import selectors
from classification.models import ModelVersion
from classification.registry.fidelity import CONFIDENT, default_rule, quantization_fidelity
from classification.registry.photos import HELD_OUT_WHEEL_PHOTOS, wheel_photos
from classification.registry.quantization import int8_version_exists, model_version_quantize
from classification.registry.services import model_version_create, model_version_promote
from classification.registry.sources.efficientnet_lite import efficientnet_lite0_source
from classification.serving.engine import get_runtime
from classification.serving.imaging import DRAFT_MARGIN_OPTION, jpeg_draft_margin
from classification.serving.litert import LiteRTClassifier

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

NAME = "imagenet-lite0"
INT8 = "imagenet-lite0-int8"
# Enough calibration crops for the figures below, few enough for a CI conversion (~10 s).
SAMPLES = 100
_FIELDS = [
    "source_format",
    "source_artifact",
    "source_sha256",
    "artifact",
    "artifact_sha256",
    "artifact_size",
    "labels",
    "input_size",
    "preprocessing",
    "metrics",
    "source",
]


@pytest.fixture(scope="session")
def lite0_source(tmp_path_factory: pytest.TempPathFactory):
    return efficientnet_lite0_source(workdir=tmp_path_factory.mktemp("lite0-int8"))


@pytest.fixture(scope="session")
def _int8_registration() -> dict:
    return {}


@pytest.fixture
def lite0(register_model, lite0_source) -> ModelVersion:
    return register_model(
        lite0_source.artifact_path,
        name=NAME,
        labels=lite0_source.labels,
        input_size=lite0_source.input_size,
        source=lite0_source.source,
        preprocessing=lite0_source.preprocessing,
    )


@pytest.fixture
def int8(lite0, _int8_registration) -> ModelVersion:
    """The int8 version of ``lite0``, in production: converted once, re-created per test."""
    if not _int8_registration:
        version = model_version_quantize(
            fp32=lite0,
            calibration=wheel_photos(held_out=False),
            calibration_set="wheel photos (calibration)",
            held_out=wheel_photos(held_out=True),
            held_out_set="wheel photos (held out)",
            samples=SAMPLES,
        )
        _int8_registration.update({f: getattr(version, f) for f in _FIELDS})
        return version
    version = model_version_create(name=INT8, **_int8_registration)
    return model_version_promote(model_version=version)


def png(photo) -> bytes:
    buffer = io.BytesIO()
    photo.open_rgb().save(buffer, format="PNG")
    return buffer.getvalue()


def classify(api_client, photo, model: str | None = None) -> dict:
    data = {"image": SimpleUploadedFile(f"{photo.name}.png", png(photo), "image/png"), "top_k": 10}
    if model:
        data["model"] = model
    response = api_client.post("/classify-image", data, format="multipart")
    assert response.status_code == 200, response.content
    return response.json()


def test_the_calibration_and_held_out_wheel_photos_are_disjoint_real_photos():
    calibration, held_out = wheel_photos(held_out=False), wheel_photos(held_out=True)
    assert len(calibration) >= 10 and len(held_out) >= 5
    assert not {p.path for p in calibration} & {p.path for p in held_out}
    assert {p.name for p in held_out} <= HELD_OUT_WHEEL_PHOTOS


def test_the_int8_version_registers_beside_the_float_one(lite0, int8):
    assert int8.name == INT8 and int8.stage == ModelVersion.Stage.PRODUCTION
    lite0.refresh_from_db()
    assert lite0.stage == ModelVersion.Stage.PRODUCTION  # both answer
    assert int8.labels == lite0.labels
    # The float version's preprocessing, but not its JPEG draft margin: validated for float only.
    assert jpeg_draft_margin(lite0.preprocessing) == 2.0
    assert jpeg_draft_margin(int8.preprocessing) is None
    assert int8.preprocessing == {
        k: v for k, v in lite0.preprocessing.items() if k != DRAFT_MARGIN_OPTION
    }
    assert int8.metrics["outputs"] == "logits"
    assert int8.metrics["quantized_from"] == {"name": NAME, "version": lite0.version}
    assert int8.metrics["quantization"]["calibration_samples"] == SAMPLES
    # 9.1 MB against 18.6 MB: int8 weights but the last layer's (5 MB of float).
    assert int8.artifact_size < lite0.artifact_size / 2
    assert "Apache License 2.0" in int8.source and int8.source.startswith("int8 of")


def test_the_int8_flat_buffer_computes_in_int8_but_its_logits(int8):
    from ai_edge_litert.interpreter import Interpreter

    from classification.store import artifact_read_verified

    content = artifact_read_verified(name=int8.artifact, sha256=int8.artifact_sha256)
    interpreter = Interpreter(model_content=content)
    dtypes = [np.dtype(t["dtype"]) for t in interpreter.get_tensor_details()]
    assert dtypes.count(np.dtype(np.int8)) > 10 * dtypes.count(np.dtype(np.float32))
    assert int8.metrics["quantization"]["float_ops"] == ["FULLY_CONNECTED"]


def test_litert_maps_the_preprocessed_range_exactly_onto_int8():
    """The ImageNet model's int8 input: scale 1/128, zero point -1, so pixel p, prepared as
    (p - 127) / 128, becomes the integer p - 128: no rounding at all."""
    from classification.serving.litert import _Quantization

    quantization = _Quantization({"dtype": np.int8, "quantization": (1 / 128, -1)})
    pixels = np.arange(256, dtype=np.float32)
    integers = quantization.quantize((pixels - 127) / 128)
    assert integers.dtype == np.int8
    assert (integers.astype(int) == pixels.astype(int) - 128).all()
    assert np.allclose(quantization.dequantize(integers), (pixels - 127) / 128)
    floats = _Quantization({"dtype": np.float32, "quantization": (0.0, 0)})
    assert floats.quantize(pixels) is pixels and floats.dequantize(pixels) is pixels


def test_the_fidelity_report_is_stored_in_the_metrics(lite0, int8):
    report = int8.metrics["fidelity"]
    assert report["against"] == {"name": NAME, "version": lite0.version}
    assert report["photo_set"] == "wheel photos (held out)"
    assert report["photos"] == len(wheel_photos(held_out=True))
    assert report["labelled"] == 0 and report["fp32_top1"] is None
    assert report["confident_photos"] >= 4
    # Wheel photos carry no labels: top-1 against float is unmeasured, so float stays default.
    assert not report["default_rule"]["passes"]
    assert any("no labelled" in reason for reason in report["default_rule"]["reasons"])


def test_int8_answers_as_float_where_float_is_confident(api_client, lite0, int8):
    """On the held-out wheel photos. (Of the calibration photos, motorcycle_right is a near
    tie, motor scooter 0.45 against moped, which int8 turns round.)"""
    confident = 0
    for photo in wheel_photos(held_out=True):
        reference = classify(api_client, photo, model=NAME)
        quantized = classify(api_client, photo, model=INT8)
        assert quantized["model"] == {"name": INT8, "version": int8.version}
        top = reference["predictions"][0]
        if top["confidence"] >= CONFIDENT:
            confident += 1
            assert quantized["predictions"][0]["label"] == top["label"], photo.name
            assert quantized["predictions"][0]["confidence"] == pytest.approx(
                top["confidence"], abs=0.05
            )
    assert confident >= 4


def test_probabilities_come_from_a_float_softmax(lite0, int8):
    """A quantized softmax answers in steps of 1/256; the softmax in float does not, and sums
    to 1 over the 1000 classes."""
    model = get_runtime().serving_model(INT8)
    (photo,) = [p for p in wheel_photos() if p.name == "chelsea"]
    from classification.serving.imaging import image_preprocess

    batch = image_preprocess(
        image=photo.open_rgb(), input_size=224, preprocessing=model.preprocessing
    )
    probabilities = model.probabilities(batch)
    assert probabilities.shape == (1000,)
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    steps = probabilities * 256
    assert not np.allclose(steps, np.round(steps), atol=1e-3)
    assert (probabilities > 0).all()  # no class rounded away to zero
    assert np.count_nonzero(probabilities < 1 / 512) > 900


def test_float_stays_the_default_unless_the_rule_passes(settings, lite0, int8):
    settings.DEFAULT_MODEL = NAME
    assert selectors.model_default_name() == NAME
    metrics = dict(int8.metrics)
    metrics["fidelity"] = {**metrics["fidelity"], "default_rule": {"passes": True, "reasons": []}}
    ModelVersion.objects.filter(pk=int8.pk).update(metrics=metrics)
    assert selectors.model_default_name() == INT8
    # An int8 version of an older float version does not answer for the newer one.
    newer = model_version_create(name=NAME, **{f: getattr(lite0, f) for f in _FIELDS})
    model_version_promote(model_version=newer)
    assert selectors.model_default_name() == NAME
    # ... and 'quantize_model --if-missing' makes the newer one its own.
    assert int8_version_exists(fp32=lite0) and not int8_version_exists(fp32=newer)


def test_the_admin_shows_the_fidelity_report(client, django_user_model, int8):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")
    client.force_login(admin)
    page = client.get(f"/admin/classification/modelversion/{int8.pk}/change/").content.decode()
    assert "Fidelity against the float version" in page
    assert "held-out photos (wheel photos (held out), 0 labelled)" in page
    assert "not the default: no labelled held-out photos" in page


def test_the_default_rule_holds_the_thresholds():
    report = {
        "labelled": 500,
        "fp32_top1": 0.884,
        "int8_top1": 0.876,
        "confident_threshold": 0.3,
        "confident_top1_agreement": 0.992,
        "mean_abs_confidence_delta": 0.025,
    }
    assert default_rule(report) == {"passes": True, "reasons": []}
    assert not default_rule({**report, "int8_top1": 0.868})["passes"]  # -1.6 points
    assert not default_rule({**report, "confident_top1_agreement": 0.989})["passes"]
    assert not default_rule({**report, "mean_abs_confidence_delta": 0.031})["passes"]


def test_fidelity_measures_top1_and_top5_on_labelled_photos(lite0, int8):
    from classification.registry.photos import Photo

    held_out = {p.name: p for p in wheel_photos(held_out=True)}
    photos = [
        Photo(name="coffee", path=held_out["coffee"].path, label="espresso"),
        Photo(name="chelsea", path=held_out["chelsea"].path, label="Egyptian cat"),
    ]
    report = quantization_fidelity(fp32=lite0, int8=int8, photos=photos, photo_set="two")
    assert report["labelled"] == 2 and report["photo_set"] == "two"
    assert report["fp32_top5"] == 1.0 and report["int8_top5"] == 1.0
    assert report["fp32_top1"] is not None and report["int8_top1"] is not None


def test_quantize_model_refuses_a_model_without_a_production_version(lite0):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no production version"):
        call_command("quantize_model", "nothing-here")


def test_quantize_model_if_missing_does_nothing_when_an_int8_version_exists(int8, capsys):
    call_command("quantize_model", NAME, "--if-missing")
    assert "already registered" in capsys.readouterr().out
    assert ModelVersion.objects.filter(name=INT8).count() == 1


def test_an_all_int8_version_of_a_small_model_serves_integers_as_probabilities(
    api_client, tiny_model
):
    """Every op int8, the logits too: int8 input and output tensors, which LiteRT quantizes
    and dequantizes; the softmax still in float."""
    from classification.store import artifact_read_verified
    from tests.support.images import image_bytes

    version = model_version_quantize(
        fp32=tiny_model,
        calibration=wheel_photos(held_out=False),
        calibration_set="wheel photos (calibration)",
        held_out=wheel_photos(held_out=True),
        held_out_set="wheel photos (held out)",
        samples=20,
        float_ops=(),
    )
    assert version.name == "tiny-int8" and version.metrics["quantization"]["float_ops"] == []
    content = artifact_read_verified(name=version.artifact, sha256=version.artifact_sha256)
    assert LiteRTClassifier(model_content=content, num_threads=1).quantized
    upload = SimpleUploadedFile("red.png", image_bytes(format="PNG", size=(32, 32)), "image/png")
    response = api_client.post(
        "/classify-image", {"image": upload, "model": "tiny-int8"}, format="multipart"
    )
    assert response.status_code == 200, response.content
    confidences = [p["confidence"] for p in response.json()["predictions"]]
    assert sum(confidences) == pytest.approx(1.0, abs=1e-4)


def test_evaluate_model_on_an_int8_version_stores_its_fidelity_too(int8, tmp_path, capsys):
    held_out = {p.name: p for p in wheel_photos(held_out=True)}
    for name in ("coffee", "chelsea"):
        held_out[name].open_rgb().save(tmp_path / f"{name}.png")
    labels = tmp_path / "labels.csv"
    labels.write_text("coffee.png,espresso\nchelsea.png,Egyptian cat\n")
    call_command("evaluate_model", INT8, "--images", str(tmp_path), "--labels", str(labels))
    assert "Against imagenet-lite0 v1" in capsys.readouterr().out
    int8.refresh_from_db()
    report = int8.metrics["fidelity"]
    assert report["photo_set"] == tmp_path.name and report["labelled"] == 2
    assert report["fp32_top5"] == 1.0 and report["int8_top5"] == 1.0


def test_the_int8_file_make_run_makes_carries_the_report_measured_on_labelled_photos(
    settings, lite0, monkeypatch
):
    """'make run' quantizes with the default samples on the wheel photos: the file it makes is
    the model measured on 1,750 labelled ImageNet photos (classification/data/int8_fidelity.json):
    byte for byte on a machine that recorded it, answering the same on the held-out wheel
    photos on another. So that report is its own and it answers by default. A conversion that
    changed the model fails here, not in production."""
    version = model_version_quantize(
        fp32=lite0,
        calibration=wheel_photos(held_out=False),
        calibration_set="wheel photos (calibration)",
        held_out=wheel_photos(held_out=True),
        held_out_set="wheel photos (held out)",
    )
    report = version.metrics["fidelity"]
    assert report["against"] == {"name": NAME, "version": lite0.version}
    assert report["labelled"] == 1750 and set(report["recorded"]["by_set"]) == {
        "imagenet-sample-images",
        "imagen",
    }
    assert report["recorded"]["matched_by"]
    assert report["int8_top1"] >= report["fp32_top1"] - 0.01
    assert report["default_rule"] == {"passes": True, "reasons": []}
    # So is the JPEG draft margin measured for this model (not its float source's 2).
    assert jpeg_draft_margin(version.preprocessing) == 1.5
    # The wheel photos' own figures stay beside it.
    assert report["measured_here"]["photos"] == len(wheel_photos(held_out=True))
    assert report["measured_here"]["confident_top1_agreement"] == 1.0
    settings.DEFAULT_MODEL = NAME
    assert selectors.model_default_name() == INT8
    settings.DEFAULT_MODEL_INT8 = False
    assert selectors.model_default_name() == NAME
    # On a machine whose files differ in their bits, the answers find the record all the same.
    from classification.registry import fidelity

    unknown_bytes = tuple(
        {**record, "fp32_sha256": "0" * 64, "int8_sha256": "0" * 64}
        for record in fidelity._recorded_reports()
    )
    monkeypatch.setattr(fidelity, "_recorded_reports", lambda: unknown_bytes)
    held_out = wheel_photos(held_out=True)
    matched = fidelity.fidelity_recorded(fp32=lite0, int8=version, photos=held_out)
    assert matched is not None and matched["labelled"] == 1750
    assert matched["recorded"]["matched_by"].startswith("the same answers on the 7 held-out")
    assert matched["recorded"]["jpeg_draft_margin"] == 1.5


def test_a_recorded_report_answers_only_for_the_same_model(lite0, int8):
    import json

    from classification.registry.fidelity import RECORDED_REPORTS, fidelity_recorded

    # The test's own int8 file (half the calibration samples) is another model: neither its
    # bytes nor its answers on the held-out photos are a record's.
    held_out = wheel_photos(held_out=True)
    assert fidelity_recorded(fp32=lite0, int8=int8, photos=held_out) is None
    records = json.loads(RECORDED_REPORTS.read_text())["records"]
    assert len({(r["fp32_sha256"], r["int8_sha256"]) for r in records}) == len(records)
    for known in records:
        fp32 = ModelVersion(name=NAME, version=3, artifact_sha256=known["fp32_sha256"])
        quantized = ModelVersion(name=INT8, version=1, artifact_sha256=known["int8_sha256"])
        report = fidelity_recorded(fp32=fp32, int8=quantized)
        assert report is not None and report["against"] == {"name": NAME, "version": 3}
        assert report["recorded"]["matched_by"] == "the very files (SHA-256)"
        assert report["default_rule"]["passes"]
        other = ModelVersion(name=NAME, version=3, artifact_sha256="0" * 64)
        assert fidelity_recorded(fp32=other, int8=quantized) is None


def test_answers_match_within_a_rounding_only():
    from classification.registry.fidelity import ANSWER_TOLERANCE, answers_match

    recorded = {"coffee": [[967, 0.92], [968, 0.03], [504, 0.01], [1, 0.004], [2, 0.003]]}
    same = {"coffee": [[967, 0.9201], [968, 0.0299], [504, 0.01], [2, 0.0031], [1, 0.0029]]}
    assert answers_match(recorded, {**same, "coffee": [*same["coffee"], [3, 0.002]]})
    moved = {"coffee": [[967, 0.92 + 2 * ANSWER_TOLERANCE], *same["coffee"][1:]]}
    assert not answers_match(recorded, moved)
    other_top1 = {"coffee": [[968, 0.5], [967, 0.49], [504, 0.01], [1, 0.004], [2, 0.003]]}
    assert not answers_match(recorded, other_top1)
    dropped = {"coffee": same["coffee"][:4]}  # the record's fifth is not among its answers
    assert not answers_match(recorded, dropped)
    assert not answers_match(recorded, {**same, "chelsea": same["coffee"]})
    assert not answers_match({}, {})
