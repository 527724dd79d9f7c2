"""The birds model's download path, offline: a loopback server serves a tiny model the tests
build in the published layout (a TF Hub tarball of a SavedModel, 224 x 224 RGB in [0, 1],
965 outputs) and a label map in the published CSV format."""

import base64
import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command

from bench.loopback import serve_files
from classification.exceptions import ModelRegistrationError
from classification.models import ModelVersion
from classification.registry.sources import birds
from tests.support.images import image_bytes

pytestmark = pytest.mark.django_db

# Species whose colour the tiny model recognises, by their ids in the real label map.
RED, GREEN, BLUE = 68, 663, 3
REAL_NAMES = {
    RED: "Cardinalis cardinalis",
    GREEN: "Chlorophanes spiza",
    BLUE: "Cyanocitta cristata",
    964: "background",
}


def labelmap_csv() -> bytes:
    """The published layout: 'id,name', background (id 964) first, then ids 0 to 963."""
    rows = ["id,name", "964,background"]
    rows += [f"{i},{REAL_NAMES.get(i, f'Avis species{i}')}" for i in range(964)]
    return ("\n".join(rows) + "\n").encode()


def colour_weights() -> tuple[np.ndarray, np.ndarray]:
    """Logits = 20 x mean colour per channel for three species, a constant 2 for background.

    A dark red image (128, 0, 0) gives the cardinal 10 against background's 2 when scaled to
    [0, 1]; scaled to [-1, 1] it would give 0.04 and answer background instead.
    """
    weights = np.zeros((3, birds.BIRDS_CLASSES), dtype=np.float32)
    weights[0, RED] = weights[1, GREEN] = weights[2, BLUE] = 20.0
    bias = np.zeros(birds.BIRDS_CLASSES, dtype=np.float32)
    bias[964] = 2.0
    return weights, bias


def build_tf2_saved_model(path: Path) -> Path:
    """A tf.Module saved with tf.saved_model.save: serving_default, softmax over 965 classes."""
    import tensorflow as tf

    weights, bias = colour_weights()

    class ColourBirds(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weights = tf.Variable(weights)
            self.bias = tf.Variable(bias)

        @tf.function(input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.float32)])
        def __call__(self, images):
            mean = tf.reduce_mean(images, axis=[1, 2])
            return tf.nn.softmax(tf.matmul(mean, self.weights) + self.bias)

    module = ColourBirds()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.__call__})
    return path


def build_tf1_hub_module(path: Path) -> Path:
    """The TF1 Hub format the real model uses: a SavedModel under the empty tag set with a
    'default' signature whose outputs are a dict, and a tfhub_module.pb beside it."""
    import tensorflow as tf

    v1 = tf.compat.v1
    weights, bias = colour_weights()
    with tf.Graph().as_default(), v1.Session() as session:
        images = v1.placeholder(tf.float32, [None, 224, 224, 3], name="images")
        w = v1.get_variable("weights", initializer=tf.constant(weights))
        b = v1.get_variable("bias", initializer=tf.constant(bias))
        probabilities = tf.nn.softmax(tf.matmul(tf.reduce_mean(images, axis=[1, 2]), w) + b)
        session.run(v1.global_variables_initializer())
        signature = v1.saved_model.signature_def_utils.predict_signature_def(
            inputs={"images": images},
            outputs={"default": probabilities, "logits": tf.identity(probabilities)},
        )
        builder = v1.saved_model.Builder(str(path))
        builder.add_meta_graph_and_variables(
            session, tags=[], signature_def_map={"default": signature}
        )
        builder.save()
    (path / "tfhub_module.pb").write_bytes(b"\x08\x01")  # ModuleDef, format version 1
    return path


def hub_tarball(folder: Path) -> bytes:
    """The folder as TF Hub's compressed format serves it: saved_model.pb at the root."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname=".")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tf2_files(tmp_path_factory):
    folder = build_tf2_saved_model(tmp_path_factory.mktemp("birds-tf2") / "model")
    return {"/birds.tar.gz": hub_tarball(folder), "/labelmap.csv": labelmap_csv()}


@pytest.fixture(scope="module")
def tf1_files(tmp_path_factory):
    folder = build_tf1_hub_module(tmp_path_factory.mktemp("birds-tf1") / "model")
    return {"/birds.tar.gz": hub_tarball(folder), "/labelmap.csv": labelmap_csv()}


def _configure(settings, server, files, tmp_path):
    settings.MODEL_DOWNLOAD_CACHE = tmp_path / "downloads"
    settings.BIRDS_MODEL_URL = f"{server.url}/birds.tar.gz"
    settings.BIRDS_MODEL_SHA256 = hashlib.sha256(files["/birds.tar.gz"]).hexdigest()
    settings.BIRDS_LABELS_URL = f"{server.url}/labelmap.csv"
    settings.BIRDS_LABELS_SHA256 = hashlib.sha256(files["/labelmap.csv"]).hexdigest()


def _classify(api_client, color, **fields):
    png = image_bytes(format="PNG", size=(40, 30), color=color)
    body = {"image_base64": base64.b64encode(png).decode(), "model": "birds", **fields}
    response = api_client.post("/classify-image", body, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def test_fetch_model_birds_registers_the_hub_model_and_answers_bird_names(
    tf2_files, settings, tmp_path, api_client
):
    with serve_files(tf2_files) as server:
        _configure(settings, server, tf2_files, tmp_path)
        call_command("fetch_model", "birds")
        assert server.hits == {"/birds.tar.gz": 1, "/labelmap.csv": 1}

    version = ModelVersion.objects.get(name="birds")
    assert version.stage == "production"
    assert version.source_format == "saved_model"
    assert version.input_size == 224
    assert version.preprocessing["scale"] == [0.0, 1.0]
    assert len(version.labels) == 965
    assert version.labels[964] == "background"  # placed by id, though it is the first row
    assert version.labels[RED] == "Cardinalis cardinalis"
    assert version.metrics["parity_max_abs_diff"] < 1e-4
    assert version.metrics["outputs"] == "probabilities"
    assert settings.BIRDS_MODEL_SHA256 in version.source

    red = _classify(api_client, (128, 0, 0))  # answers background if scaled to [-1, 1]
    assert red["classification"] == "Cardinalis cardinalis"
    assert len(red["predictions"]) == 3  # top_k's default
    assert red["model"] == {"name": "birds", "version": version.version}
    assert _classify(api_client, (0, 200, 0))["classification"] == "Chlorophanes spiza"
    assert _classify(api_client, (0, 0, 255))["classification"] == "Cyanocitta cristata"
    assert _classify(api_client, (0, 0, 0))["classification"] == "background"


def test_the_api_agrees_with_tensorflow_on_pixels_scaled_to_0_1(
    tf2_files, settings, tmp_path, api_client
):
    with serve_files(tf2_files) as server:
        _configure(settings, server, tf2_files, tmp_path)
        call_command("fetch_model", "birds")
    weights, bias = colour_weights()
    color = (90, 30, 160)
    mean = np.array(color, dtype=np.float64) / 255.0
    logits = mean @ weights + bias
    expected = np.exp(logits - logits.max())
    expected /= expected.sum()
    body = _classify(api_client, color, top_k=5)
    labels = ModelVersion.objects.get(name="birds").labels
    for prediction in body["predictions"]:
        index = labels.index(prediction["label"])
        assert prediction["confidence"] == pytest.approx(expected[index], abs=1e-4)


def test_the_tf1_hub_format_of_the_real_model_registers(tf1_files, settings, tmp_path, api_client):
    with serve_files(tf1_files) as server:
        _configure(settings, server, tf1_files, tmp_path)
        call_command("fetch_model", "birds")
    version = ModelVersion.objects.get(name="birds")
    assert version.metrics["parity_max_abs_diff"] < 1e-4
    assert _classify(api_client, (128, 0, 0))["classification"] == "Cardinalis cardinalis"
    assert _classify(api_client, (0, 0, 0))["classification"] == "background"


def test_fetch_model_accept_unverified_registers_it_and_records_the_checksums(
    tf2_files, settings, tmp_path
):
    # Without checksums the command refuses (test_model_source_contract.py); told to accept:
    with serve_files(tf2_files) as server:
        _configure(settings, server, tf2_files, tmp_path)
        settings.BIRDS_MODEL_SHA256 = settings.BIRDS_LABELS_SHA256 = ""
        call_command("fetch_model", "birds", "--accept-unverified")
    version = ModelVersion.objects.get(name="birds")
    # The checksums found are recorded with the version, to be pinned by setting later.
    assert hashlib.sha256(tf2_files["/birds.tar.gz"]).hexdigest() in version.source
    assert hashlib.sha256(tf2_files["/labelmap.csv"]).hexdigest() in version.source


# --- Converting hub-style SavedModels ------------------------------------------------------


def _three_class_module(tf, *, input_shape, outputs):
    """A SavedModel-able module over mean colour with 3 classes and the given output keys."""

    class Module(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weights = tf.Variable(np.eye(3, dtype=np.float32) * 5.0)

        @tf.function(input_signature=[tf.TensorSpec(input_shape, tf.float32)])
        def __call__(self, images):
            scores = tf.nn.softmax(tf.matmul(tf.reduce_mean(images, axis=[1, 2]), self.weights))
            return {key: tf.identity(scores) for key in outputs}

    return Module()


def test_a_model_that_accepts_any_size_is_served_at_the_size_its_source_states(tmp_path):
    import tensorflow as tf

    from classification.registry.services import model_version_register

    module = _three_class_module(tf, input_shape=[None, None, None, 3], outputs=["default"])
    tf.saved_model.save(module, str(tmp_path / "m"), signatures={"default": module.__call__})
    version = model_version_register(
        artifact_path=tmp_path / "m", name="any-size", labels=["r", "g", "b"], input_size=48
    )
    assert version.input_size == 48
    assert version.metrics["parity_max_abs_diff"] < 1e-4


def test_a_signature_with_several_outputs_and_none_called_default_is_refused(tmp_path):
    import tensorflow as tf

    from classification.registry.services import model_version_register

    module = _three_class_module(tf, input_shape=[None, 32, 32, 3], outputs=["a", "b"])
    tf.saved_model.save(
        module, str(tmp_path / "m"), signatures={"serving_default": module.__call__}
    )
    with pytest.raises(ModelRegistrationError, match=r"outputs \['a', 'b'\]"):
        model_version_register(artifact_path=tmp_path / "m", name="two", labels=["r", "g", "b"])
    assert not ModelVersion.objects.exists()


# --- The label map ------------------------------------------------------------------------


def test_labels_follow_the_id_column_not_the_row_order():
    data = b"id,name\n2,background\n0,Parus major\n1,Pica pica\n"
    labels = birds.aiy_labelmap_labels(data, classes=3)
    assert labels == ["Parus major", "Pica pica", "background"]


def test_a_byte_order_mark_and_extra_columns_are_accepted():
    data = "\ufeffid,name,common_name\n1,Pica pica,magpie\n0,Parus major,\n".encode()
    assert birds.aiy_labelmap_labels(data, classes=2) == ["Parus major", "Pica pica"]


@pytest.mark.parametrize(
    "data",
    [
        b"index,label\n0,a\n1,b\n",  # not the columns of an AIY map
        b"id,name\n0,a\n0,b\n",  # an id twice
        b"id,name\n0,a\n2,b\n",  # out of range
        b"id,name\n0,a\n",  # one missing
        b"id,name\n0,a\nx,b\n",  # not a number
        b"id,name\n0,a\n1,\n",  # unnamed
        b"\xff\xfe\x00",  # not UTF-8
    ],
)
def test_a_label_map_that_does_not_fit_is_refused(data):
    with pytest.raises(ModelRegistrationError):
        birds.aiy_labelmap_labels(data, classes=2)


# --- Extracting the archive safely ---------------------------------------------------------


def _tar(entries, *, mode="w:gz") -> bytes:
    """A tarball from (TarInfo, content or None) pairs."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for info, content in entries:
            if content is not None:
                info.size = len(content)
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return buffer.getvalue()


def _file(name: str, content: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), content


def _link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _extract(tmp_path: Path, data: bytes, **limits) -> Path:
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(data)
    return birds.hub_archive_extract(archive=archive, destination=tmp_path / "out", **limits)


def test_a_hub_layout_is_extracted(tmp_path):
    folder = tarfile.TarInfo("./variables")
    folder.type = tarfile.DIRTYPE
    data = _tar(
        [
            _file("./saved_model.pb", b"graph"),
            (folder, None),
            _file("./variables/variables.index", b"index"),
            _file("variables/variables.data-00000-of-00001", b"data"),
        ]
    )
    out = _extract(tmp_path, data)
    assert (out / "saved_model.pb").read_bytes() == b"graph"
    assert (out / "variables" / "variables.data-00000-of-00001").read_bytes() == b"data"


@pytest.mark.parametrize(
    "entry",
    [
        _file("/etc/evil"),
        _file("../evil"),
        _file("variables/../../evil"),
        _link("variables", "/etc", tarfile.SYMTYPE),
        _link("evil", "../../etc/passwd", tarfile.SYMTYPE),
        _link("evil", "saved_model.pb", tarfile.LNKTYPE),
        _link("fifo", "", tarfile.FIFOTYPE),
    ],
    ids=["absolute", "dotdot", "nested-dotdot", "symlink-dir", "symlink-out", "hardlink", "fifo"],
)
def test_unsafe_entries_are_refused_and_nothing_is_left(tmp_path, entry):
    data = _tar([_file("saved_model.pb"), entry, _file("variables/after")])
    with pytest.raises(ModelRegistrationError, match=r"unsafe|not a plain file"):
        _extract(tmp_path, data)
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "evil").exists()


def test_the_archive_size_and_entry_count_are_bounded(tmp_path):
    data = _tar([_file("saved_model.pb", b"x" * 1000), _file("variables/v", b"y" * 1000)])
    with pytest.raises(ModelRegistrationError, match="more than 1500 bytes"):
        _extract(tmp_path, data, max_bytes=1500)
    many = _tar([_file("saved_model.pb")] + [_file(f"f{i}") for i in range(20)])
    with pytest.raises(ModelRegistrationError, match="more than 10 entries"):
        _extract(tmp_path, many, max_members=10)


def test_an_archive_without_a_saved_model_at_its_root_is_refused(tmp_path):
    with pytest.raises(ModelRegistrationError, match=r"no saved_model\.pb at its root"):
        _extract(tmp_path, _tar([_file("model/saved_model.pb")]))
    assert not (tmp_path / "out").exists()


def test_bytes_that_are_not_a_tarball_are_refused(tmp_path):
    with pytest.raises(ModelRegistrationError, match="cannot be read"):
        _extract(tmp_path, b"<html>Sign in to Kaggle</html>")
