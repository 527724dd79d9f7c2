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


def test_compose_runs_under_docker_compose_and_podman_compose():
    """No start gate that podman without systemd never opens, no port range over replicas
    (podman-compose cannot publish one), a stop grace longer than the server's own, and
    Elasticsearch and Kibana behind a profile."""
    services = compose_services()
    assert set(services) >= {
        "setup",
        "web",
        "web-2",
        "sender",
        "postgres",
        "redis",
        "elasticsearch",
        "kibana",
        "kibana-import",
    }
    for name, service in services.items():
        for dependency in (service.get("depends_on") or {}).values():
            assert dependency["condition"] == "service_started", name
        for port in service.get("ports", []):
            assert not re.search(r"\d-\d", port), (name, port)  # a range like 8000-8001
        assert "replicas" not in service.get("deploy", {}), name
    for name in ("web", "web-2"):
        web = services[name]
        assert web["command"] == ["web"]
        assert web["environment"]["ELASTICSEARCH_EXPORT_IN_WORKERS"] == "0"
        assert web["environment"]["MIGRATE_ON_START"] == "0"  # it waits for setup instead
        grace = int(web["stop_grace_period"].removesuffix("s"))
        assert grace > int(web["environment"]["WEB_GRACEFUL_TIMEOUT"]), name
        assert "healthcheck" in web
        volumes = " ".join(web["volumes"])
        assert "models:/var/lib/classifier/models" in volumes
        assert f"spill-{name}:{web['environment']['REQUEST_LOG_SPILL_DIR']}" in volumes
    assert services["setup"]["command"] == ["setup"]
    assert services["sender"]["command"] == ["sender"]
    for name in ("sender", "elasticsearch", "kibana", "kibana-import"):
        assert services[name]["profiles"] == ["elasticsearch"], name
    for name in ("setup", "web", "postgres", "redis"):
        assert "profiles" not in services[name], name
    assert "classifier-dashboard.ndjson" in " ".join(services["kibana-import"]["entrypoint"])
    assert "--retry" in services["kibana-import"]["entrypoint"]
    assert "pgdata:" in " ".join(services["postgres"]["volumes"])
