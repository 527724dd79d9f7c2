"""The shipped Kibana saved objects and compose file hold together."""

import json
import re
from pathlib import Path

import elasticsearch
import yaml

from reporting.elastic import RequestEventDocument

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NDJSON = DEPLOY / "kibana" / "classifier-dashboard.ndjson"


def saved_objects() -> list[dict]:
    return [json.loads(line) for line in NDJSON.read_text().splitlines() if line.strip()]


def test_saved_objects_parse_and_every_reference_resolves():
    objects = saved_objects()
    known = {(obj["type"], obj["id"]) for obj in objects}
    assert len(known) == len(objects)  # ids are unique
    for obj in objects:
        names = {ref["name"] for ref in obj["references"]}
        for ref in obj["references"]:
            assert (ref["type"], ref["id"]) in known, ref
        search = obj["attributes"].get("kibanaSavedObjectMeta", {}).get("searchSourceJSON")
        if search and "indexRefName" in json.loads(search):
            assert json.loads(search)["indexRefName"] in names
        if obj["type"] == "dashboard":
            for panel in json.loads(obj["attributes"]["panelsJSON"]):
                assert f"{panel['panelIndex']}:{panel['panelRefName']}" in names


def test_the_dashboard_holds_the_promised_charts():
    objects = {obj["id"]: obj for obj in saved_objects()}
    (dashboard,) = [obj for obj in objects.values() if obj["type"] == "dashboard"]
    shown = {objects[ref["id"]]["attributes"]["title"] for ref in dashboard["references"]}
    for words in (
        "Requests over time",
        "Top labels",
        "p50 / p95 / p99",
        "Cache hit rate",
        "Errors by code",
    ):
        assert any(words in title for title in shown), words
    assert objects["classifier-events"]["attributes"]["timeFieldName"] == "timestamp"


def test_visualizations_use_fields_the_events_mapping_has():
    properties = RequestEventDocument._doc_type.mapping.to_dict()["properties"]
    for obj in saved_objects():
        if obj["type"] != "visualization":
            continue
        for agg in json.loads(obj["attributes"]["visState"])["aggs"]:
            field = agg["params"].get("field")
            assert field is None or field in properties, (obj["id"], field)


def test_compose_pins_elasticsearch_and_kibana_to_the_client_major_version():
    compose = (DEPLOY / "docker-compose.yml").read_text()
    versions = re.findall(r"image: docker\.elastic\.co/(?:elasticsearch|kibana)/\w+:(\S+)", compose)
    # Elasticsearch, Kibana, and the Kibana image again for the saved-objects import job.
    assert len(versions) >= 2 and len(set(versions)) == 1
    assert versions[0].split(".")[0] == str(elasticsearch.__versionstr__.split(".")[0])
    assert re.fullmatch(r"\d+\.\d+\.\d+", versions[0])


def compose_services() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]


def test_compose_runs_the_whole_stack_with_health_gates():
    services = compose_services()
    assert set(services) >= {
        "setup",
        "web",
        "sender",
        "postgres",
        "redis",
        "elasticsearch",
        "kibana",
        "kibana-import",
    }
    web = services["web"]
    assert web["deploy"]["replicas"] == 2
    assert web["environment"]["ELASTICSEARCH_EXPORT_IN_WORKERS"] == "0"
    assert web["depends_on"]["setup"]["condition"] == "service_completed_successfully"
    for name in ("postgres", "redis"):
        assert web["depends_on"][name]["condition"] == "service_healthy"
    assert services["sender"]["command"] == ["sender"]
    assert services["sender"]["depends_on"]["elasticsearch"]["condition"] == "service_healthy"
    assert services["kibana-import"]["depends_on"]["kibana"]["condition"] == "service_healthy"
    assert "classifier-dashboard.ndjson" in " ".join(services["kibana-import"]["entrypoint"])
    for name in ("web", "postgres", "redis", "elasticsearch", "kibana"):
        assert "healthcheck" in services[name], name
    volumes = " ".join(web["volumes"] + services["postgres"]["volumes"])
    assert "models:/var/lib/classifier/models" in volumes and "pgdata:" in volumes
