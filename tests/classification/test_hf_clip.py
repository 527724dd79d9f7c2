"""'fetch_model clip': a CLIP from a loopback server laid out like the Hugging Face hub.

The hub serves the tests' trained tiny CLIP written in the hub's own format (HF tensor names and
layouts, transformers' config keys, vocab.json and merges.txt), so a registration here runs the
same download, mapping, reference check and conversion as OpenAI's ViT-B/32 would.
"""

import base64
import io
import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from bench.loopback import free_port
from classification.exceptions import ModelRegistrationError
from classification.models import ModelVersion
from classification.registry.clip import DEFAULT_TEMPLATE, cifar100_labels
from classification.registry.sources import hf_clip
from classification.registry.sources.hf_hub import hub_files_download
from classification.registry.sources.tiny_clip import TINY_CLIP_LABELS, square_image
from tests.support.hf_clip import FakeHub, hf_files_from_keras_preset
from tests.support.images import encode

pytestmark = pytest.mark.django_db
REPO = "test/tiny-clip"


@pytest.fixture(scope="session")
def hub_tiny_clip(tiny_clip_preset: Path) -> dict[str, bytes]:
    return hf_files_from_keras_preset(tiny_clip_preset)


@pytest.fixture
def hub(hub_tiny_clip, tripwire, settings, tmp_path):
    server = FakeHub(files=dict(hub_tiny_clip), repo=REPO)
    tripwire.resolve(server.hub_host, "127.0.0.1")
    tripwire.resolve(server.storage_host, "127.0.0.1")
    settings.HF_HUB_URL = server.url
    settings.MODEL_DOWNLOAD_CACHE = tmp_path / "downloads"
    settings.MODEL_DOWNLOAD_TIMEOUT = 5.0
    yield server
    server.stop()


def fetch(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("fetch_model", "clip", f"--repo={REPO}", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def classify(api_client, colour: str, **fields) -> dict:
    image = base64.b64encode(encode(square_image(colour, seed=11), "PNG")).decode()
    response = api_client.post("/classify-image", {"image_base64": image, **fields}, format="json")
    assert response.status_code == 200, response.json()
    return response.json()


def blobs(settings) -> list[str]:
    folder = Path(settings.MODEL_DOWNLOAD_CACHE) / "huggingface" / "test--tiny-clip" / "blobs"
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def test_fetch_model_clip_registers_the_hub_checkpoint_for_cifar100(hub, api_client):
    out, err = fetch()
    version = ModelVersion.objects.get(name="clip-cifar100")
    assert version.stage == ModelVersion.Stage.PRODUCTION
    assert version.kind == ModelVersion.Kind.ZERO_SHOT
    assert version.labels == cifar100_labels()
    assert version.zero_shot["template"] == DEFAULT_TEMPLATE
    assert f"Hugging Face {REPO} at commit {hub.commit}" in version.source
    assert version.metrics["hf_commit"] == hub.commit
    assert version.metrics["reference_max_abs_diff"] < 1e-4
    assert version.metrics["text_reference_max_abs_diff"] < 1e-4
    assert "Keras against the NumPy reference" in out
    assert "model.safetensors" in err and "100%" in err  # the progress bar
    # The weights came by the hub's redirect to its storage host.
    [weights] = hub.file_requests("model.safetensors")[1:]
    assert weights.path.startswith("/lfs/")

    # The model answers through the API: per-request labels tell the squares apart ...
    for colour in ("red", "green", "blue"):
        body = classify(api_client, colour, model="clip-cifar100", labels=TINY_CLIP_LABELS)
        assert body["classification"] == f"{colour} square"
    # ... and its own labels are the 100 CIFAR-100 classes.
    body = classify(api_client, "red", model="clip-cifar100", top_k=5)
    assert body["model"] == {"name": "clip-cifar100", "version": version.version}
    assert {p["label"] for p in body["predictions"]} <= set(cifar100_labels())


def test_an_interrupted_download_resumes_with_a_range_request_on_the_next_run(
    hub, api_client, settings, tmp_path
):
    hub.drop_once.add("model.safetensors")
    with pytest.raises(CommandError, match="run the command again to resume"):
        fetch()
    assert not ModelVersion.objects.exists()
    size = len(hub.files["model.safetensors"])
    [part] = [name for name in blobs(settings) if name.endswith(".part")]
    folder = Path(settings.MODEL_DOWNLOAD_CACHE) / "huggingface" / "test--tiny-clip" / "blobs"
    assert (folder / part).stat().st_size == size // 2

    labels = tmp_path / "squares.txt"
    labels.write_text("\n".join(TINY_CLIP_LABELS))
    fetch(f"--labels={labels}", "--name=squares")
    first, resumed = hub.file_requests("model.safetensors")[1::2]  # the storage requests
    assert first.range is None and resumed.range == f"bytes={size // 2}-"
    assert not [name for name in blobs(settings) if name.endswith(".part")]
    # The registered model knows the squares by its own stored labels.
    for colour in ("red", "green", "blue"):
        assert classify(api_client, colour, model="squares")["classification"] == (
            f"{colour} square"
        )


def test_a_second_run_downloads_nothing_and_a_pinned_commit_needs_no_hub(hub, settings):
    names = ["config.json", "model.safetensors", "vocab.json", "merges.txt"]
    listed, paths = hub_files_download(repo=REPO, revision="main", names=names, progress=None)
    assert all(hub.file_requests(name) for name in names)
    before = len(hub.requests)
    again, same = hub_files_download(repo=REPO, revision="main", names=names, progress=None)
    assert same == paths and again == listed
    assert [seen.path for seen in hub.requests[before:]] == [f"/api/models/{REPO}/revision/main"]
    hub.stop()  # offline now: the commit's listing and files are in the cache
    _, pinned = hub_files_download(repo=REPO, revision=hub.commit, names=names, progress=None)
    assert pinned == paths
    assert paths["model.safetensors"].read_bytes() == hub.files["model.safetensors"]


def test_a_server_that_ignores_range_restarts_the_file_cleanly(hub, settings):
    hub.drop_once.add("model.safetensors")
    with pytest.raises(ModelRegistrationError, match="resume"):
        hub_files_download(repo=REPO, revision="main", names=["model.safetensors"], progress=None)
    hub.ignore_range = True
    _, paths = hub_files_download(
        repo=REPO, revision="main", names=["model.safetensors"], progress=None
    )
    assert paths["model.safetensors"].read_bytes() == hub.files["model.safetensors"]
    assert hub.file_requests("model.safetensors")[-1].range is not None  # asked, was ignored


@pytest.mark.parametrize(
    ("name", "checksum"), [("model.safetensors", "SHA-256"), ("vocab.json", "git blob id")]
)
def test_a_wrong_checksum_deletes_the_file_and_registers_nothing(hub, settings, name, checksum):
    data = hub.files[name]
    hub.served[name] = data[:-3] + bytes(b ^ 0xFF for b in data[-3:])
    with pytest.raises(CommandError, match=f"{name} of {REPO}.* has {checksum} .*Deleted"):
        fetch()
    assert not ModelVersion.objects.exists()
    listed = {entry["rfilename"]: entry for entry in hub.listing()["siblings"]}[name]
    checksum = listed["lfs"]["sha256"] if "lfs" in listed else listed["blobId"]
    assert not [blob for blob in blobs(settings) if blob.startswith(checksum)]


@pytest.mark.parametrize("offline", ["closed port", "no name resolution"])
def test_offline_fails_at_once_with_advice(settings, tripwire, tmp_path, offline):
    settings.MODEL_DOWNLOAD_CACHE = tmp_path / "downloads"
    if offline == "closed port":
        settings.HF_HUB_URL = f"http://127.0.0.1:{free_port()}"
    else:  # the default hub on a machine without DNS
        settings.HF_HUB_URL = "https://huggingface.co"
        tripwire.names["huggingface.co"] = socket.gaierror
    started = time.monotonic()
    with pytest.raises(CommandError, match="Could not reach the Hugging Face hub") as error:
        call_command("fetch_model", "clip", stdout=io.StringIO(), stderr=io.StringIO())
    assert time.monotonic() - started < 3
    assert "no internet access" in str(error.value) and "HF_HUB_URL" in str(error.value)
    assert not ModelVersion.objects.exists()


def test_a_transposed_kernel_is_caught_by_the_numpy_reference(hub, monkeypatch):
    # The query projection is square: a missing transpose passes every shape check.
    _path, _transform = hf_clip.BLOCK_WEIGHTS["self_attn.q_proj.weight"]
    monkeypatch.setitem(
        hf_clip.BLOCK_WEIGHTS,
        "self_attn.q_proj.weight",
        (_path, lambda tensor, shape: tensor.reshape(shape)),
    )
    with pytest.raises(CommandError, match=r"disagrees with the NumPy reference .* on the image"):
        fetch()
    assert not ModelVersion.objects.exists()


def _with_tensors(hub: FakeHub, change) -> None:  # type: ignore[no-untyped-def]
    from safetensors.numpy import load, save

    tensors = dict(load(hub.files["model.safetensors"]))
    change(tensors)
    hub.files["model.safetensors"] = save(tensors)


def test_every_tensor_of_the_file_must_be_used(hub):
    _with_tensors(hub, lambda t: t.update({"text_model.extra_head.weight": np.zeros(3, "f4")}))
    with pytest.raises(
        CommandError, match=r"1 tensor.* the mapping does not use: text_model\.extra"
    ):
        fetch()
    assert not ModelVersion.objects.exists()


def test_a_missing_tensor_is_named(hub):
    _with_tensors(hub, lambda t: t.pop("vision_model.encoder.layers.1.mlp.fc2.bias"))
    with pytest.raises(CommandError, match=r"lacks 1 tensor.*layers\.1\.mlp\.fc2\.bias"):
        fetch()


def test_a_config_of_another_architecture_is_refused(hub):
    config = json.loads(hub.files["config.json"])
    config["vision_config"]["hidden_act"] = "gelu"
    hub.files["config.json"] = json.dumps(config).encode()
    with pytest.raises(CommandError, match="only quick_gelu CLIPs"):
        fetch()


def test_an_unknown_revision_is_refused(hub):
    with pytest.raises(CommandError, match=r"HTTP 404 .*does not exist"):
        fetch("--revision=v9")


def test_the_numpy_reference_reproduces_the_keras_clip_the_files_were_written_from(
    tiny_clip_preset, hub_tiny_clip
):
    import keras_hub
    from safetensors.numpy import load

    from classification.registry.sources.clip_reference import (
        reference_image_embeddings,
        reference_text_embeddings,
    )

    backbone = keras_hub.models.CLIPBackbone.from_preset(str(tiny_clip_preset))
    config = hf_clip.hf_clip_config(json.loads(hub_tiny_clip["config.json"]))
    tensors = dict(load(hub_tiny_clip["model.safetensors"]))
    images = np.random.default_rng(5).standard_normal((2, 32, 32, 3)).astype(np.float32)
    vocabulary = json.loads(hub_tiny_clip["vocab.json"])
    start, end = vocabulary["<|startoftext|>"], vocabulary["<|endoftext|>"]
    token_ids = np.zeros((2, 77), dtype=np.int32)
    token_ids[0, :4] = [start, vocabulary["red</w>"], vocabulary["square</w>"], end]
    token_ids[1, :3] = [start, 300, end]
    pairs = [
        (
            backbone.get_vision_embeddings(images),
            reference_image_embeddings(
                tensors=tensors, shape=config.tower("vision"), images=images
            ),
        ),
        (
            backbone.get_text_embeddings(token_ids),
            reference_text_embeddings(
                tensors=tensors, shape=config.tower("text"), token_ids=token_ids
            ),
        ),
    ]
    for keras_side, reference in pairs:
        keras_side = np.asarray(keras_side, dtype=np.float64)
        # Up to the text tower's last norm epsilon (KerasHub 1e-6, the config's 1e-5).
        np.testing.assert_allclose(keras_side, reference, rtol=1e-4, atol=1e-4)
