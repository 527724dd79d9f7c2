"""export_feedback: trusted feedback written as the training data format (read back by the
training app's reader) and as a labelled image folder (read back by evaluate_model), each image
kept with the feedback or fetched again through the guarded fetcher from a loopback server."""

import csv
import hashlib
import io
import itertools
import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from bench.loopback import serve_files
from classification.evaluation import labelled_set_read
from classification.models import ModelVersion
from classification.registry.services import model_version_create, model_version_promote
from ground_truth.models import Feedback
from reporting.models import RequestLog
from tests.support.images import image_bytes
from tests.support.training import garment_jpeg
from training.dataset import (
    CATEGORIES,
    TAGS,
    data_source,
    dataset_generate,
    dataset_load,
    datasets_load,
)

pytestmark = pytest.mark.django_db

TINY_GARMENT_SIZE = 32
_numbers = itertools.count(1)


def build_tiny_garment_model(path: Path) -> Path:
    """A multi-task model with the garment model's outputs (5 categories, 3 tags) over 32 x 32:
    what an export checks is the version's label set, not what it answers."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(4)
    inputs = tf.keras.Input(shape=(TINY_GARMENT_SIZE, TINY_GARMENT_SIZE, 3), name="image")
    pooled = tf.keras.layers.GlobalAveragePooling2D()(inputs)
    category = tf.keras.layers.Dense(len(CATEGORIES), activation="softmax", name="category")
    tags = tf.keras.layers.Dense(len(TAGS), activation="sigmoid", name="tags")
    tf.keras.Model(inputs, {"category": category(pooled), "tags": tags(pooled)}).save(path)
    return path


@pytest.fixture(scope="session")
def tiny_garment_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_garment_model(tmp_path_factory.mktemp("tiny-garment") / "garment.keras")


_GARMENT_FIELDS = [
    "kind", "source_format", "source_artifact", "source_sha256", "artifact", "artifact_sha256",
    "artifact_size", "labels", "tag_labels", "tag_thresholds", "input_size", "preprocessing",
    "metrics", "source",
]  # fmt: skip


@pytest.fixture(scope="session")
def _garment_registration() -> dict:
    return {}


@pytest.fixture
def garment_version(db, tiny_garment_path: Path, _garment_registration: dict) -> ModelVersion:
    """'garments' v1 in production: a tiny multi-task version with the garment label set
    (registered for real once per session, its fields copied after)."""
    if not _garment_registration:
        from classification.registry.multi_task import multi_task_version_register

        version = multi_task_version_register(
            artifact_path=tiny_garment_path,
            name="garments",
            labels=CATEGORIES,
            tag_labels=TAGS,
            tag_thresholds=[0.5] * len(TAGS),
            stage=ModelVersion.Stage.PRODUCTION,
        )
        _garment_registration.update({f: getattr(version, f) for f in _GARMENT_FIELDS})
        return version
    version = model_version_create(name="garments", **_garment_registration)
    return model_version_promote(model_version=version)


@pytest.fixture
def feedback_dir(settings, tmp_path: Path) -> Path:
    folder = tmp_path / "feedback-images"
    folder.mkdir()
    settings.FEEDBACK_IMAGE_DIR = folder
    return folder


@pytest.fixture
def loopback_fetches(settings) -> None:
    """The guarded fetcher may reach the test's loopback server (it refuses loopback else)."""
    settings.IMAGE_FETCH_PRIVATE_ALLOWLIST = ["127.0.0.1/32"]
    settings.IMAGE_FETCH_TIMEOUT = 3.0


def answered(
    version: ModelVersion,
    *,
    image: bytes,
    label: str,
    tags: list[str] | None = None,
    url: str = "",
) -> RequestLog:
    """The request-log row of an answered request of ``version`` on ``image``."""
    number = next(_numbers)
    return RequestLog.objects.create(
        request_id=f"req-{number:04d}",
        input_kind=RequestLog.InputKind.URL if url else RequestLog.InputKind.UPLOAD,
        image_url=url,
        image_sha256=hashlib.sha256(image).hexdigest(),
        model_name=version.name,
        model_version=version.version,
        top_label=label,
        confidence=0.8,
        processing_time=0.02,
        status_code=200,
        tags=None
        if tags is None
        else [
            {"label": tag, "probability": 0.9 if tag in tags else 0.1, "present": tag in tags}
            for tag in version.tag_labels
        ],
    )


def feedback_on(
    log: RequestLog,
    version: ModelVersion,
    *,
    label: str | None = None,
    tags: list[str] | None = None,
    review: str = Feedback.Review.TRUSTED,
    kept: bytes | None = None,
    folder: Path | None = None,
    **fields: object,
) -> Feedback:
    """Feedback on ``log``: right (no ``label``) or the right label; ``kept`` is the image sent
    with it, written under ``folder`` (FEEDBACK_IMAGE_DIR) as the feedback service keeps it."""
    image = ""
    if kept is not None:
        assert folder is not None
        image = f"{log.request_id}.img"
        (folder / image).write_bytes(kept)
    predicted_tags = None
    if log.tags is not None:
        predicted_tags = [tag["label"] for tag in log.tags if tag["present"]]
    return Feedback.objects.create(
        request_log=log,
        model_version=version,
        caller=f"anon:{log.request_id}",
        correct=label is None or label == log.top_label,
        predicted_label=log.top_label,
        confidence=log.confidence or 0.0,
        label=label or log.top_label,
        predicted_tags=predicted_tags,
        tags=tags,
        review=review,
        image=image,
        **fields,
    )


def _manifest(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _export(*arguments: str) -> str:
    out = io.StringIO()
    call_command("export_feedback", *arguments, stdout=out)
    return out.getvalue().strip()


def test_trusted_feedback_is_written_in_the_training_format_and_the_reader_loads_it(
    garment_version, feedback_dir, tmp_path
):
    photos = [
        garment_jpeg(category=c, tags={}, seed=s)
        for s, c in enumerate(["SHIRTS", "BLOUSES", "TANK_TOPS", "MINI_DRESSES", "SHIRTS"])
    ]
    # Right, tags as answered; corrected category and tags; corrected category, no tags at all.
    right = answered(garment_version, image=photos[0], label="SHIRTS", tags=["checker"])
    feedback_on(right, garment_version, kept=photos[0], folder=feedback_dir)
    corrected = answered(garment_version, image=photos[1], label="SHIRTS", tags=["checker"])
    feedback_on(
        corrected,
        garment_version,
        label="BLOUSES",
        tags=["floral", "polka dot"],
        kept=photos[1],
        folder=feedback_dir,
    )
    untagged = answered(garment_version, image=photos[2], label="SHIRTS", tags=["floral"])
    feedback_on(
        untagged, garment_version, label="TANK_TOPS", tags=[], kept=photos[2], folder=feedback_dir
    )
    # Not reviewed yet, and rejected: neither is exported.
    pending = answered(garment_version, image=photos[3], label="BLOUSES", tags=[])
    feedback_on(
        pending, garment_version, label="MINI_DRESSES", tags=[], review=Feedback.Review.PENDING,
        kept=photos[3], folder=feedback_dir,
    )  # fmt: skip
    rejected = answered(garment_version, image=photos[4], label="SHIRTS", tags=[])
    feedback_on(
        rejected, garment_version, label="BLOUSES", tags=[], review=Feedback.Review.REJECTED,
        kept=photos[4], folder=feedback_dir,
    )  # fmt: skip

    output = tmp_path / "export"
    line = _export("--model", "garments", "--format", "parquet", "--output", str(output))

    assert line == f"Exported 3 of 3 feedback rows to {output} (parquet; images: 3 kept)."
    table = pq.read_table(output / "data.parquet")
    assert table.column_names == ["uuid", "cc3", "color1", *TAGS]
    labels = dataset_load(data_path=output / "data.parquet", images_dir=output / "images")
    sha = {log.request_id: log.image_sha256 for log in (right, corrected, untagged)}
    got = {
        uuid: (CATEGORIES[category], [t for t, on in zip(TAGS, tags, strict=True) if on])
        for uuid, category, tags in zip(labels.uuids, labels.categories, labels.tags, strict=True)
    }
    assert got == {
        sha[right.request_id]: ("SHIRTS", ["checker"]),
        sha[corrected.request_id]: ("BLOUSES", ["polka dot", "floral"]),
        sha[untagged.request_id]: ("TANK_TOPS", []),
    }
    for uuid in labels.uuids:  # the bytes as answered
        assert hashlib.sha256((output / "images" / f"{uuid}.jpg").read_bytes()).hexdigest() == uuid
    assert json.loads((output / "labels.json").read_text()) == {
        "categories": CATEGORIES,
        "tags": TAGS,
    }
    assert {row["request_id"]: row["source"] for row in _manifest(output / "manifest.csv")} == {
        right.request_id: "kept",
        corrected.request_id: "kept",
        untagged.request_id: "kept",
    }
    # The folder as train_garment_model names it (--data DIR) loads the same rows.
    assert datasets_load(sources=[data_source(data=output)]).uuids == labels.uuids


def test_include_pending_widens_the_export_and_rejected_feedback_is_never_exported(
    garment_version, feedback_dir, tmp_path
):
    reviews = [Feedback.Review.TRUSTED, Feedback.Review.PENDING, Feedback.Review.REJECTED]
    for seed, review in enumerate(reviews):
        photo = garment_jpeg(category="SHIRTS", tags={}, seed=10 + seed)
        log = answered(garment_version, image=photo, label="SHIRTS", tags=[])
        feedback_on(log, garment_version, review=review, kept=photo, folder=feedback_dir)

    line = _export("--model", "garments", "--output", str(tmp_path / "wide"), "--include-pending")

    assert line.startswith("Exported 2 of 2 feedback rows")
    assert {row["review"] for row in _manifest(tmp_path / "wide" / "manifest.csv")} == {
        "trusted",
        "pending",
    }


def test_images_not_kept_are_fetched_from_the_request_url_through_the_guarded_fetcher(
    garment_version, feedback_dir, loopback_fetches, tmp_path
):
    photo = garment_jpeg(category="CASUAL_DRESSES", tags={"floral": 1}, seed=21)
    then = garment_jpeg(category="SHIRTS", tags={}, seed=22)
    now = garment_jpeg(category="SHIRTS", tags={"checker": 1}, seed=23)
    gone = garment_jpeg(category="BLOUSES", tags={}, seed=24)
    with serve_files({"/dress.jpg": photo, "/changed.jpg": now}) as server:
        fetched = answered(
            garment_version, image=photo, label="CASUAL_DRESSES", tags=["floral"],
            url=f"{server.url}/dress.jpg",
        )  # fmt: skip
        feedback_on(fetched, garment_version)
        # Another image is at the URL now: the feedback was about the one answered.
        changed = answered(
            garment_version, image=then, label="SHIRTS", tags=[], url=f"{server.url}/changed.jpg"
        )
        feedback_on(changed, garment_version)
        missing = answered(
            garment_version, image=gone, label="BLOUSES", tags=[], url=f"{server.url}/gone.jpg"
        )
        feedback_on(missing, garment_version)
        # An upload whose image was not sent again with the feedback.
        upload = answered(garment_version, image=gone, label="SHIRTS", tags=[])
        feedback_on(upload, garment_version, label="BLOUSES", tags=[])

        line = _export("--model", "garments", "--output", str(tmp_path / "export"))

        assert server.hits == {"/dress.jpg": 1, "/changed.jpg": 1, "/gone.jpg": 1}
    assert line == (
        f"Exported 1 of 4 feedback rows to {tmp_path / 'export'} (parquet; images: 1 fetched); "
        "skipped 3: 1 image URL failed (upstream_error), 1 image changed, 1 no image."
    )
    labels = dataset_load(
        data_path=tmp_path / "export" / "data.parquet", images_dir=tmp_path / "export" / "images"
    )
    assert labels.uuids == [fetched.image_sha256]
    assert CATEGORIES[labels.categories[0]] == "CASUAL_DRESSES"
    assert labels.tags.tolist() == [[0.0, 1.0, 0.0]]  # polka dot, floral, checker
    assert [row["source"] for row in _manifest(tmp_path / "export" / "manifest.csv")] == ["fetched"]


def test_without_the_allowlist_the_fetcher_refuses_loopback_and_nothing_is_exported(
    garment_version, feedback_dir, settings, tmp_path
):
    settings.IMAGE_FETCH_PRIVATE_ALLOWLIST = []
    photo = garment_jpeg(category="SHIRTS", tags={}, seed=31)
    with serve_files({"/shirt.jpg": photo}) as server:
        log = answered(
            garment_version, image=photo, label="SHIRTS", tags=[], url=f"{server.url}/shirt.jpg"
        )
        feedback_on(log, garment_version)
        with pytest.raises(CommandError) as refused:
            _export("--model", "garments", "--output", str(tmp_path / "export"))
        assert server.hits == {}
    assert "Nothing to export" in str(refused.value)
    assert "1 image URL failed (url_unreachable)" in str(refused.value)


def test_kept_images_outside_the_feedback_folder_or_past_retention_are_not_used(
    garment_version, feedback_dir, tmp_path
):
    photo = garment_jpeg(category="SHIRTS", tags={}, seed=41)
    outside = tmp_path / "elsewhere.jpg"
    outside.write_bytes(photo)
    escaping = answered(garment_version, image=photo, label="SHIRTS", tags=[])
    escaped = feedback_on(escaping, garment_version)
    Feedback.objects.filter(pk=escaped.pk).update(image="../elsewhere.jpg")
    expired_photo = garment_jpeg(category="BLOUSES", tags={}, seed=42)
    expired = answered(garment_version, image=expired_photo, label="BLOUSES", tags=[])
    feedback_on(
        expired, garment_version, kept=expired_photo, folder=feedback_dir,
        image_expires_at=timezone.now() - timedelta(minutes=1),
    )  # fmt: skip
    kept_photo = garment_jpeg(category="TANK_TOPS", tags={}, seed=43)
    kept = answered(garment_version, image=kept_photo, label="TANK_TOPS", tags=[])
    feedback_on(
        kept, garment_version, kept=kept_photo, folder=feedback_dir,
        image_expires_at=timezone.now() + timedelta(days=1),
    )  # fmt: skip

    line = _export("--model", "garments", "--output", str(tmp_path / "export"))

    assert line.endswith("(parquet; images: 1 kept); skipped 2: 2 no image.")


def test_the_latest_feedback_on_an_image_wins(garment_version, feedback_dir, tmp_path):
    photo = garment_jpeg(category="SHIRTS", tags={}, seed=51)
    first = answered(garment_version, image=photo, label="BLOUSES", tags=[])
    feedback_on(first, garment_version, label="SHIRTS", tags=[], kept=photo, folder=feedback_dir)
    again = answered(garment_version, image=photo, label="BLOUSES", tags=[])
    feedback_on(
        again, garment_version, label="TANK_TOPS", tags=["checker"], kept=photo,
        folder=feedback_dir,
    )  # fmt: skip

    line = _export("--model", "garments", "--output", str(tmp_path / "export"))

    assert line.endswith("skipped 1: 1 older feedback on the same image.")
    rows = pq.read_table(tmp_path / "export" / "data.parquet").to_pylist()
    assert [(row["cc3"], row["checker"]) for row in rows] == [("TANK_TOPS", 1)]


def test_the_folder_export_is_read_back_by_evaluate_model(tiny_model, feedback_dir, tmp_path):
    red, blue = image_bytes(format="PNG", color=(250, 10, 10)), image_bytes(color=(10, 10, 250))
    odd = "r/e\\d .."  # a label that cannot be a folder name as it is
    tiny_model.labels = ["red", "green", odd]
    tiny_model.save(update_fields=["labels"])
    feedback_on(
        answered(tiny_model, image=red, label="red"), tiny_model, kept=red, folder=feedback_dir
    )
    wrong = answered(tiny_model, image=blue, label="red")
    feedback_on(wrong, tiny_model, label="green", kept=blue, folder=feedback_dir)
    odd_log = answered(tiny_model, image=red, label="red")
    feedback_on(odd_log, tiny_model, label=odd, kept=red, folder=feedback_dir)
    unknown = answered(tiny_model, image=blue, label="red")
    feedback_on(unknown, tiny_model, label="purple", kept=blue, folder=feedback_dir)

    output = tmp_path / "folder"
    line = _export("--model", "tiny", "--format", "folder", "--output", str(output))

    assert line == (
        f"Exported 3 of 4 feedback rows to {output} (folder; images: 3 kept); "
        "skipped 1: 1 label not in the model's labels."
    )
    sha_red, sha_blue = (hashlib.sha256(data).hexdigest() for data in (red, blue))
    files = sorted(p.relative_to(output).as_posix() for p in output.rglob("*") if p.is_file())
    assert files == sorted(
        [f"red/{sha_red}.png", f"green/{sha_blue}.jpg", f"r_e_d/{sha_red}.png", "manifest.csv"]
    )
    labelled = labelled_set_read(images_dir=output, labels_csv=output / "manifest.csv")
    assert sorted((image.name, image.label) for image in labelled.images) == sorted(
        [
            (f"red/{sha_red}.png", "red"),
            (f"green/{sha_blue}.jpg", "green"),
            (f"r_e_d/{sha_red}.png", odd),
        ]
    )
    out = io.StringIO()
    call_command(
        "evaluate_model", "tiny", "--images", str(output), "--labels", str(output / "manifest.csv"),
        "--no-store", stdout=out,
    )  # fmt: skip
    assert out.getvalue().startswith("tiny v1: 3 images of folder: top-1 ")


def test_refusals_say_why(tiny_model, garment_version, feedback_dir, tmp_path):
    with pytest.raises(CommandError, match=r"tiny is a classifier model: .* use --format folder"):
        _export("--model", "tiny", "--format", "parquet", "--output", str(tmp_path / "a"))
    with pytest.raises(CommandError, match="No model nothing is registered"):
        _export("--model", "nothing", "--output", str(tmp_path / "b"))
    with pytest.raises(CommandError, match="No model garments v7 is registered"):
        _export("--model", "garments", "--version", "7", "--output", str(tmp_path / "b"))
    used = tmp_path / "used"
    used.mkdir()
    (used / "data.parquet").write_bytes(b"old")
    with pytest.raises(CommandError, match="is not an empty folder"):
        _export("--model", "garments", "--output", str(used))
    assert (used / "data.parquet").read_bytes() == b"old"


def test_training_refuses_an_export_of_another_label_set(
    tiny_multi_task_model, feedback_dir, tmp_path
):
    """An export of a multi-task model with other labels is written, and train_garment_model
    refuses to concatenate it with garment data, before any training."""
    warm = image_bytes(color=(240, 40, 30))
    log = answered(tiny_multi_task_model, image=warm, label="red", tags=["warm"])
    feedback_on(log, tiny_multi_task_model, kept=warm, folder=feedback_dir)
    export = tmp_path / "tiny-export"
    _export("--model", "tiny-tags", "--output", str(export))
    assert pq.read_table(export / "data.parquet").column_names == [
        "uuid", "cc3", "color1", "warm", "cool",
    ]  # fmt: skip
    original = dataset_generate(output_dir=tmp_path / "orig", count=6, image_size=40, seed=2)

    with pytest.raises(CommandError) as refused:
        call_command(
            "train_garment_model", "--data", str(original.root), "--data", str(export),
            "--run-dir", str(tmp_path / "run"),
        )  # fmt: skip

    assert "has other labels than the garment model trains on" in str(refused.value)
    assert "categories red, green, blue and tags warm, cool" in str(refused.value)
    assert not (tmp_path / "run").exists()


def test_exported_tags_match_the_answer_when_the_caller_said_it_was_right(
    garment_version, feedback_dir, tmp_path
):
    photo = garment_jpeg(category="MINI_DRESSES", tags={"polka dot": 1}, seed=61)
    log = answered(garment_version, image=photo, label="MINI_DRESSES", tags=["polka dot"])
    feedback_on(log, garment_version, kept=photo, folder=feedback_dir)
    # Wrong category and nothing said of the tags: what the image has is not known.
    other = garment_jpeg(category="SHIRTS", tags={}, seed=62)
    unsure = answered(garment_version, image=other, label="BLOUSES", tags=["floral"])
    feedback_on(unsure, garment_version, label="SHIRTS", kept=other, folder=feedback_dir)

    line = _export("--model", "garments", "--output", str(tmp_path / "export"))

    assert line.endswith("skipped 1: 1 tags unknown.")
    labels = dataset_load(
        data_path=tmp_path / "export" / "data.parquet", images_dir=tmp_path / "export" / "images"
    )
    np.testing.assert_array_equal(labels.tags, [[1.0, 0.0, 0.0]])


@pytest.mark.slow
def test_retraining_on_the_original_data_and_the_exported_corrections_registers_a_version(
    garment_version, feedback_dir, tmp_path
):
    original = dataset_generate(output_dir=tmp_path / "original", count=30, image_size=40, seed=6)
    corrected = []
    for seed in range(10):
        category = CATEGORIES[seed % len(CATEGORIES)]
        tags = ["floral"] if seed % 2 else []
        photo = garment_jpeg(category=category, tags=dict.fromkeys(tags, 1), seed=100 + seed)
        wrong = CATEGORIES[(seed + 1) % len(CATEGORIES)]
        log = answered(garment_version, image=photo, label=wrong, tags=["checker"])
        feedback_on(
            log, garment_version, label=category, tags=tags, kept=photo, folder=feedback_dir
        )
        corrected.append(log.image_sha256)
    export = tmp_path / "export"
    _export("--model", "garments", "--output", str(export))
    run_dir = tmp_path / "run"
    out = io.StringIO()

    call_command(
        "train_garment_model", "--data", str(original.root), "--data", str(export),
        "--run-dir", str(run_dir), "--input-size", "32", "--batch-size", "16", "--epochs", "1",
        "--fine-tune-epochs", "1", "--weights", "random", "--seed", "0",
        "--register", "garments", verbosity=0, stdout=out,
    )  # fmt: skip

    assert "Registered garments v2 (staging)" in out.getvalue()
    split = json.loads((run_dir / "training.json").read_text())["split"]
    trained_on = split["train"] + split["validation"]
    assert len(trained_on) == 40
    assert set(corrected) <= set(trained_on)
    retrained = ModelVersion.objects.get(name="garments", version=2)
    assert retrained.kind == ModelVersion.Kind.MULTI_TASK
    assert (retrained.labels, retrained.tag_labels) == (CATEGORIES, TAGS)
    # Its report needs every data set it was trained on: its validation rows are in both.
    with pytest.raises(CommandError, match="validation rows of the run are in none of the data"):
        call_command(
            "evaluate_garment_model", "--data", str(original.root), "--run-dir", str(run_dir),
            "--output", str(tmp_path / "report"),
        )  # fmt: skip
