"""POST /feedback and DELETE /feedback/<request_id> in the OpenAPI schema, with their errors."""

import pytest
import yaml
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


@pytest.fixture
def schema() -> dict:
    return yaml.safe_load(APIClient().get("/api/schema/").content)


def test_give_feedback_documents_its_bodies_answers_and_refusals(schema):
    operation = schema["paths"]["/feedback"]["post"]
    assert operation["operationId"] == "give_feedback"
    content = operation["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data"}
    assert set(operation["responses"]) == {"200", "201", "400", "401", "403", "404", "413", "429"}
    assert "unknown_label" in operation["responses"]["400"]["description"]
    assert "image_mismatch" in operation["responses"]["400"]["description"]
    body = schema["components"]["schemas"]["GiveFeedbackJsonRequest"]
    assert body["oneOf"] == [{"required": ["request_id"]}, {"required": ["image_sha256"]}]
    assert body["required"] == ["correct"]
    assert "image" not in body["properties"]
    assert body["properties"]["image_sha256"]["pattern"] == "^[0-9a-f]{64}$"
    answer = schema["components"]["schemas"]["Feedback"]["properties"]
    assert {"request_id", "model", "correct", "label", "tags", "review", "image_kept"} <= set(
        answer
    )


def test_forget_request_documents_its_refusals(schema):
    operation = schema["paths"]["/feedback/{request_id}"]["delete"]
    assert operation["operationId"] == "forget_request"
    assert set(operation["responses"]) == {"204", "401", "403", "404", "429"}
