"""The multi-task garment model end to end: training, report, registry, API and batch."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from classification.registry.multi_task import heads_by_name
from classification.serving.engine import get_runtime
from classification.serving.imaging import image_decode, image_preprocess
from reporting.models import RequestLog
from tests.support.training import garment_jpeg
from training.batch import predictions_batch
from training.dataset import CATEGORIES, TAGS, labels_read
from training.evaluation import model_evaluate
from training.figures import precision_recall_f1

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report_dir(garment_dataset, garment_run, tmp_path_factory):
    output = tmp_path_factory.mktemp("report")
    model_evaluate(
        data_path=garment_dataset.data_path,
        images_dir=garment_dataset.images_dir,
        run_dir=garment_run.run_dir,
        output_dir=output,
        latency_runs=4,
    )
    return output


def test_short_training_beats_chance_and_the_majority_class(report_dir):
    model = json.loads((report_dir / "report.json").read_text())["model"]
    assert model["rows"] >= 60  # held out, stratified by category
    assert model["top1_accuracy"] >= 0.8
    assert model["top1_accuracy"] > model["majority_top1_accuracy"] + 0.3
    assert model["top1_accuracy"] > 2.5 * model["chance_top1_accuracy"]
    assert model["top2_accuracy"] >= model["top1_accuracy"]
    for tag in ("polka dot", "floral"):
        assert model["tags"][tag]["f1"] >= 0.6
        assert model["tags"][tag]["f1"] > model["tags"][tag]["f1_always_present"] + 0.1
    # The rare tag: about six positives among the held-out rows, so a looser bound.
    assert model["tags"]["checker"]["f1"] > model["tags"]["checker"]["f1_always_present"] + 0.25
    assert model["tag_macro_f1"] > np.mean([model["tags"][t]["f1_always_present"] for t in TAGS])


def test_the_report_figures_match_a_recomputation_from_the_predictions(report_dir, garment_dataset):
    report = json.loads((report_dir / "report.json").read_text())
    predictions = pq.read_table(report_dir / "predictions.parquet").to_pylist()
    truth = {row["uuid"]: row for row in pq.read_table(garment_dataset.data_path).to_pylist()}
    top1 = np.mean([row["category1"] == truth[row["uuid"]]["cc3"] for row in predictions])
    top2 = np.mean(
        [truth[row["uuid"]]["cc3"] in (row["category1"], row["category2"]) for row in predictions]
    )
    assert report["model"]["top1_accuracy"] == pytest.approx(top1)
    assert report["model"]["top2_accuracy"] == pytest.approx(top2)
    for tag in TAGS:
        true = np.array([truth[row["uuid"]][tag] for row in predictions])
        predicted = np.array([row[tag] for row in predictions])
        tp = int(((true == 1) & (predicted == 1)).sum())
        precision = tp / max(int(predicted.sum()), 1)
        recall = tp / max(int(true.sum()), 1)
        assert report["model"]["tags"][tag]["precision"] == pytest.approx(precision)
        assert report["model"]["tags"][tag]["recall"] == pytest.approx(recall)
    matrix = np.array(report["model"]["confusion_matrix"])
    assert matrix.sum() == len(predictions)
    assert np.trace(matrix) == pytest.approx(top1 * len(predictions))
    assert report["data"]["rows"] == 320
    assert sum(report["data"]["categories"].values()) == 320
    costs = report["costs"]
    assert costs["multi_task"]["size_mb"] < costs["two_separate_models"]["size_mb"]
    page = (report_dir / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 5
    assert 'src="http' not in page and "<script" not in page and "<link" not in page


def test_litert_and_keras_agree_on_both_heads(garment_model, garment_run, garment_dataset):
    per_head = garment_model.metrics["parity_max_abs_diff_per_head"]
    assert set(per_head) == {"category", "tags"}
    assert max(per_head.values()) < 1e-4
    assert garment_model.tag_labels == TAGS and len(garment_model.tag_thresholds) == 3

    import keras

    keras_model = keras.models.load_model(str(garment_run.model_path))
    labels = labels_read(path=garment_dataset.data_path)
    image = image_decode(
        data=(garment_dataset.images_dir / f"{labels.uuids[0]}.jpg").read_bytes(),
        max_pixels=10**7,
    )
    batch = image_preprocess(
        image=image.image,
        input_size=garment_model.input_size,
        preprocessing=garment_model.preprocessing,
    )
    expected = heads_by_name(model=keras_model, outputs=keras_model(batch))
    served = get_runtime().serving_model("garments")
    category, tags = served.heads(batch)
    assert np.abs(category - np.asarray(expected["category"])[0]).max() < 1e-4
    assert np.abs(tags - np.asarray(expected["tags"])[0]).max() < 1e-4


def test_the_api_answers_two_categories_and_the_tags_of_a_polka_dot_blouse(
    garment_model, api_client
):
    image = garment_jpeg(category="BLOUSES", tags={"polka dot": 1}, seed=11)
    response = api_client.post("/classify-image", {"image": _upload(image), "model": "garments"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert len(body["predictions"]) == 2  # top 2 by default for this kind
    assert body["classification"] == "BLOUSES"
    assert [tag["label"] for tag in body["tags"]] == TAGS
    tags = {tag["label"]: tag for tag in body["tags"]}
    assert tags["polka dot"]["present"] is True
    assert 0.0 <= tags["floral"]["probability"] <= 1.0

    again = api_client.post(
        "/classify-image", {"image": _upload(image), "model": "garments", "top_k": 3}
    ).json()
    assert again["cached"] is True
    assert again["tags"] == body["tags"]  # cache entries carry the tags
    assert len(again["predictions"]) == 3
    rows = list(RequestLog.objects.order_by("id"))
    assert rows[-1].tags == body["tags"]


def test_other_models_answer_no_tags(db, tiny_model, api_client):
    from tests.support.images import image_bytes

    body = api_client.post("/classify-image", {"image": _upload(image_bytes())}).json()
    assert "tags" not in body
    assert len(body["predictions"]) == 3


def _upload(data: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("garment.jpg", data, content_type="image/jpeg")


def test_batch_predictions_have_the_exact_columns_and_order(
    garment_model, garment_dataset, tmp_path
):
    uuids = pq.read_table(garment_dataset.test_path).column("uuid").to_pylist()
    images = garment_dataset.images_dir
    broken = "00000000-broken"
    (images / f"{broken}.jpg").write_bytes(b"\xff\xd8\xff not really a JPEG")
    uuids = [*uuids[:10], "00000000-missing", broken, *uuids[10:]]
    test_path = tmp_path / "test.parquet"
    pq.write_table(pa.table({"uuid": uuids}), test_path)
    output = tmp_path / "predictions.parquet"

    interrupted = []

    def stop_after_two(index: int) -> None:
        interrupted.append(index)
        if len(interrupted) == 2:
            raise KeyboardInterrupt  # as a Ctrl-C halfway through

    arguments = {
        "input_path": test_path,
        "images_dir": images,
        "output_path": output,
        "model_version": garment_model,
        "workers": 2,
        "chunk_size": 8,
        "progress": False,
    }
    with pytest.raises(KeyboardInterrupt):
        predictions_batch(**arguments, on_chunk=stop_after_two)
    assert not output.exists()
    report = predictions_batch(**arguments)
    assert report.skipped == 16 and report.predicted == len(uuids) - 16
    assert report.rows == len(uuids)

    table = pq.read_table(output)
    assert table.column_names == [
        "uuid",
        "category1",
        "category2",
        "polka dot",
        "floral",
        "checker",
    ]
    assert table.column("uuid").to_pylist() == uuids
    rows = {row["uuid"]: row for row in table.to_pylist()}
    for uuid in ("00000000-missing", broken):
        assert rows[uuid] == {"uuid": uuid, **dict.fromkeys(table.column_names[1:])}
    truth = {
        row["uuid"]: row for row in pq.read_table(garment_dataset.test_labels_path).to_pylist()
    }
    good = [row for row in table.to_pylist() if row["uuid"] in truth]
    assert all(row["category1"] in CATEGORIES and row["polka dot"] in (0, 1) for row in good)
    accuracy = np.mean([row["category1"] == truth[row["uuid"]]["cc3"] for row in good])
    assert accuracy >= 0.7
    f1 = precision_recall_f1(
        true=np.array([truth[row["uuid"]]["polka dot"] for row in good]),
        predicted=np.array([row["polka dot"] for row in good]),
    )["f1"]
    assert f1 >= 0.5


def test_sharded_batch_predictions_assemble_into_the_unsharded_output(
    garment_model, garment_dataset, tmp_path
):
    arguments = {
        "input_path": garment_dataset.test_path,
        "images_dir": garment_dataset.images_dir,
        "model_version": garment_model,
        "workers": 1,
        "chunk_size": 8,
        "progress": False,
    }
    whole = predictions_batch(**arguments, output_path=tmp_path / "whole.parquet")
    output = tmp_path / "sharded.parquet"
    predicted = 0
    for index in range(3):  # three pods of an Indexed Job
        report = predictions_batch(**arguments, output_path=output, shard=(index, 3))
        assert not output.exists()
        predicted += report.predicted
    assert predicted == whole.rows
    final = predictions_batch(**arguments, output_path=output)  # every chunk done: assembles
    assert final.predicted == 0 and final.skipped == whole.rows
    assert pq.read_table(output).equals(pq.read_table(tmp_path / "whole.parquet"))
