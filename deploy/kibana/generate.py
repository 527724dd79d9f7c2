"""Writes deploy/kibana/classifier-dashboard.ndjson (Kibana saved objects for the events index).

    python deploy/kibana/generate.py

Data views for the events and report indices, five aggregation-based visualizations and a
dashboard holding them. Import with Kibana's saved-objects API or Stack Management (README.md).
"""

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "classifier-dashboard.ndjson"
EVENTS_VIEW = "classifier-events"
REPORTS_VIEW = "classifier-reports"
INDEX_REF = "kibanaSavedObjectMeta.searchSourceJSON.index"


def data_view(view_id: str, title: str, name: str) -> dict:
    return {
        "type": "index-pattern",
        "id": view_id,
        "attributes": {"title": title, "name": name, "timeFieldName": "timestamp"},
        "references": [],
    }


def visualization(
    vis_id: str, title: str, vis_type: str, aggs: list[dict], params: dict, query: str = ""
) -> dict:
    search_source = {
        "query": {"query": query, "language": "kuery"},
        "filter": [],
        "indexRefName": INDEX_REF,
    }
    vis_state = {"title": title, "type": vis_type, "aggs": aggs, "params": params}
    return {
        "type": "visualization",
        "id": vis_id,
        "attributes": {
            "title": title,
            "description": "",
            "visState": json.dumps(vis_state),
            "uiStateJSON": "{}",
            "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(search_source)},
        },
        "references": [{"name": INDEX_REF, "type": "index-pattern", "id": EVENTS_VIEW}],
    }


def count(agg_id: str = "1") -> dict:
    return {"id": agg_id, "enabled": True, "type": "count", "schema": "metric", "params": {}}


def over_time(agg_id: str, schema: str = "segment") -> dict:
    return {
        "id": agg_id,
        "enabled": True,
        "type": "date_histogram",
        "schema": schema,
        "params": {
            "field": "timestamp",
            "interval": "auto",
            "min_doc_count": 1,
            "extended_bounds": {},
        },
    }


def terms(agg_id: str, field: str, size: int, schema: str) -> dict:
    return {
        "id": agg_id,
        "enabled": True,
        "type": "terms",
        "schema": schema,
        "params": {
            "field": field,
            "size": size,
            "order": "desc",
            "orderBy": "1",
            "otherBucket": False,
            "missingBucket": False,
        },
    }


def xy_params(chart: str) -> dict:
    return {
        "type": chart,
        "addTooltip": True,
        "addLegend": True,
        "legendPosition": "right",
        "seriesParams": [
            {
                "show": True,
                "type": chart,
                "mode": "normal",
                "data": {"id": "1", "label": "Count"},
                "valueAxis": "ValueAxis-1",
            }
        ],
    }


VISUALIZATIONS = [
    visualization(
        "classifier-requests-over-time",
        "Requests over time (by outcome)",
        "histogram",
        [count(), over_time("2"), terms("3", "outcome", 2, "group")],
        xy_params("histogram"),
    ),
    visualization(
        "classifier-top-labels",
        "Top labels",
        "horizontal_bar",
        [count(), terms("2", "top_label", 10, "segment")],
        xy_params("histogram"),
        query="outcome : success",
    ),
    visualization(
        "classifier-processing-time-percentiles",
        "Processing time p50 / p95 / p99 (seconds), cached and uncached",
        "line",
        [
            {
                "id": "1",
                "enabled": True,
                "type": "percentiles",
                "schema": "metric",
                "params": {"field": "processing_time", "percents": [50, 95, 99]},
            },
            over_time("2"),
            terms("3", "cached", 2, "group"),
        ],
        xy_params("line"),
        query="outcome : success",
    ),
    visualization(
        "classifier-cache-hit-rate",
        "Cache hit rate (answers served from a cache)",
        "pie",
        [count(), terms("2", "cached", 2, "segment")],
        {
            "type": "pie",
            "addTooltip": True,
            "addLegend": True,
            "legendPosition": "right",
            "isDonut": True,
            "labels": {
                "show": True,
                "values": True,
                "last_level": True,
                "truncate": 100,
                "valuesFormat": "percent",
            },
        },
        query="outcome : success",
    ),
    visualization(
        "classifier-errors-by-code",
        "Errors by code",
        "table",
        [count(), terms("2", "error_code", 20, "bucket"), terms("3", "status_code", 5, "bucket")],
        {
            "perPage": 10,
            "showPartialRows": False,
            "showMetricsAtAllLevels": False,
            "showTotal": True,
        },
        query="outcome : error",
    ),
]


def dashboard() -> dict:
    layout = [(0, 0, 48, 12), (0, 12, 24, 15), (24, 12, 24, 15), (0, 27, 32, 15), (32, 27, 16, 15)]
    panels, references = [], []
    for number, (vis, (x, y, w, h)) in enumerate(zip(VISUALIZATIONS, layout, strict=True), 1):
        panels.append(
            {
                "type": "visualization",
                "panelIndex": str(number),
                "gridData": {"x": x, "y": y, "w": w, "h": h, "i": str(number)},
                "embeddableConfig": {},
                "panelRefName": f"panel_{number}",
            }
        )
        references.append(
            {"name": f"{number}:panel_{number}", "type": "visualization", "id": vis["id"]}
        )
    return {
        "type": "dashboard",
        "id": "classifier-dashboard",
        "attributes": {
            "title": "Image classifier: traffic, labels, latency, cache",
            "description": "POST /classify-image requests exported from the request log.",
            "panelsJSON": json.dumps(panels),
            "optionsJSON": json.dumps({"useMargins": True, "hidePanelTitles": False}),
            "timeRestore": True,
            "timeFrom": "now-24h",
            "timeTo": "now",
            "refreshInterval": {"pause": False, "value": 10000},
            "kibanaSavedObjectMeta": {
                "searchSourceJSON": json.dumps(
                    {"query": {"query": "", "language": "kuery"}, "filter": []}
                )
            },
        },
        "references": references,
    }


def saved_objects() -> list[dict]:
    return [
        data_view(EVENTS_VIEW, "classifier-events*", "Classifier request events"),
        data_view(REPORTS_VIEW, "classifier-reports*", "Classifier /report calls"),
        *VISUALIZATIONS,
        dashboard(),
    ]


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("".join(json.dumps(obj, sort_keys=True) + "\n" for obj in saved_objects()))
    print(f"wrote {OUT}")
