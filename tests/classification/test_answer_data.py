"""The hand-built answer of POST /classify-image matches the serializer its schema comes from."""

import pytest

from classification.apis import ClassifyImageApi, classification_data
from classification.serving.results import ClassificationResult, Prediction, TagPrediction


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
