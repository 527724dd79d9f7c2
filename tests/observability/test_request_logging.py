"""One JSON access line per request, carrying the request id that also goes back to the client."""

import logging

import pytest

from core.logs import request_annotate
from tests.support.observability import CLASSIFY, upload

pytestmark = pytest.mark.django_db


def test_a_sent_request_id_comes_back_and_is_in_the_access_line(api_client, tiny_model, json_log):
    response = upload(api_client, seed=1, HTTP_X_REQUEST_ID="client-id-123")
    assert response["X-Request-ID"] == "client-id-123"

    [line] = json_log.access()
    assert line["request_id"] == "client-id-123"
    assert line["method"] == "POST" and line["path"] == "/classify-image"
    assert line["route"] == CLASSIFY and line["status"] == 200
    assert line["duration_ms"] > 0
    assert line["model"] == "tiny" and line["model_version"] == tiny_model.version
    assert line["cache"] == "miss"
    assert line["level"] == "INFO" and "time" in line and "process" in line


def test_a_request_without_an_id_gets_a_fresh_one(api_client, tiny_model, json_log):
    first = upload(api_client, seed=2)
    second = upload(api_client, seed=2)
    ids = [first["X-Request-ID"], second["X-Request-ID"]]
    assert len(set(ids)) == 2 and all(len(i) == 32 for i in ids)
    assert [line["request_id"] for line in json_log.access()] == ids
    assert [line["cache"] for line in json_log.access()] == ["miss", "image"]


def test_an_unusable_request_id_is_replaced(api_client, json_log):
    response = api_client.get("/models", HTTP_X_REQUEST_ID="bad id with spaces\u00e9")
    assert response["X-Request-ID"] != "bad id with spaces\u00e9"
    assert json_log.access()[0]["request_id"] == response["X-Request-ID"]


def test_errors_carry_their_code(api_client, tiny_model, json_log):
    response = api_client.post("/classify-image", {"top_k": 3}, format="json")
    assert response.status_code == 400
    [line] = json_log.access()
    assert line["status"] == 400 and line["error_code"] == "invalid_request"


def test_every_record_logged_during_a_request_carries_its_id(api_client, tiny_model, json_log):
    upload(api_client, seed=3, HTTP_X_REQUEST_ID="load-id")  # the first request loads the model
    serving = [r for r in json_log.records() if r["logger"] == "classification.serving.engine"]
    assert serving and {r["request_id"] for r in serving} == {"load-id"}

    logging.getLogger("elsewhere").warning("outside any request")
    assert json_log.records()[-1]["request_id"] == "-"


def test_probes_and_scrapes_stay_out_of_the_access_log(api_client, json_log):
    for path in ("/health/live", "/health/ready", "/metrics"):
        api_client.get(path)
    assert json_log.access() == []


def test_an_unknown_path_is_logged_under_one_route_name(api_client, json_log):
    api_client.get("/no/such/page/42")
    [line] = json_log.access()
    assert line["status"] == 404 and line["route"] == "unmatched"


def test_facts_reach_the_access_line_from_anywhere_in_the_request(rf):
    request = rf.get("/")
    request_annotate(request, cache="url")
    request_annotate(request, model="tiny")
    assert request.log_facts == {"cache": "url", "model": "tiny"}
