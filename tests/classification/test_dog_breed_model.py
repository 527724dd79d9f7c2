"""The real offline model end to end: the API agrees with TensorFlow on the same .h5."""

import base64

import numpy as np
import pytest

from tests.support.images import encode, noise_image

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


@pytest.fixture(scope="module")
def keras_dog_model(dog_source):
    import tensorflow as tf

    return tf.keras.models.load_model(str(dog_source.artifact_path), compile=False)


@pytest.mark.parametrize("seed", [0, 1])
def test_api_probabilities_equal_tensorflow_on_the_same_h5(
    api_client, dog_model, keras_dog_model, seed
):
    image = noise_image(size=(160, 160), seed=seed)
    response = api_client.post(
        "/classify-image",
        {"image_base64": base64.b64encode(encode(image, "PNG")).decode(), "top_k": 10},
        format="json",
    )
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == {"name": "dog-breeds", "version": dog_model.version}

    # Direct TensorFlow: the same pixels, scaled from [0, 255] to [-1, 1], no resize needed.
    pixels = np.asarray(image, dtype=np.float32)[np.newaxis] / 127.5 - 1.0
    expected = np.asarray(keras_dog_model(pixels, training=False))[0]
    by_label = dict(zip(dog_model.labels, expected, strict=True))
    for prediction in body["predictions"]:
        assert prediction["confidence"] == pytest.approx(by_label[prediction["label"]], abs=1e-3)
    assert body["classification"] == dog_model.labels[int(expected.argmax())]
