"""The hand-built answer of POST /classify-image matches the serializer its schema comes from."""

import threading

import pytest

from classification.apis import ClassifyImageApi, classification_data
from classification.results import ClassificationResult, Prediction, TagPrediction


def result(*, tags: list[TagPrediction] | None) -> ClassificationResult:
    return ClassificationResult(
        predictions=[
            Prediction(label="tabby", confidence=0.625),
            Prediction(label="tiger cat", confidence=0.25),
        ],
        model_name="imagenet-lite0",
        model_version=3,
        image_sha256="ab" * 32,
        cached=True,
        cache_kind="url",
        processing_time=0.001234,
        timings={"inference": 0.5},
        input_stats={"width": 640, "height": 480},
        tags=tags,
    )


@pytest.mark.parametrize(
    "tags",
    [
        None,
        [
            TagPrediction(label="striped", probability=0.75, present=True),
            TagPrediction(label="dotted", probability=0.125, present=False),
        ],
    ],
    ids=["classifier", "multi-task"],
)
def test_the_answer_is_what_the_output_serializer_would_give(tags):
    answer = result(tags=tags)
    expected = ClassifyImageApi.OutputSerializer(answer).data

    data = classification_data(answer)

    assert data == expected
    assert list(data) == list(expected)  # the same key order, too
    assert ("tags" in data) == (tags is not None)


def test_the_input_serializer_builds_its_fields_once_per_thread():
    Input = ClassifyImageApi.InputSerializer
    first, second = Input(data={"image_url": "http://a.example/x.jpg"}), Input(data={})
    assert first.fields is not None and second.fields is first.fields  # reused, not copied
    assert all(field.parent is second for field in second.fields.values())  # and taken over

    other: dict = {}
    thread = threading.Thread(target=lambda: other.update(fields=Input(data={}).fields))
    thread.start()
    thread.join()
    assert other["fields"] is not first.fields  # a thread of its own never shares them

    # One instance's outcome does not leak into the next one's on the same fields.
    assert not Input(data={"image_url": 42}).is_valid()
    valid = Input(data={"image_url": "http://a.example/x.jpg", "top_k": 2})
    assert valid.is_valid(), valid.errors
    assert valid.validated_data["top_k"] == 2
