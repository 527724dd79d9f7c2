"""Reading Prometheus text in tests."""

from typing import Any


def samples_sum(text: str, name: str, labels: dict[str, Any] | None = None) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels`` (0.0: none)."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted = {key: str(value) for key, value in (labels or {}).items()}
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in wanted.items()):
                total += sample.value
    return total
