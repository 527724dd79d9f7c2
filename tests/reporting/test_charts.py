"""The admin charts' axes fit their data."""

import pytest

from reporting.charts import _nice_max, bar_chart


@pytest.mark.parametrize(
    "value,expected",
    [
        (0, 1.0),
        (0.0083, 0.01),
        (0.7, 1.0),
        (1, 1),
        (2, 2),
        (3, 5),
        (9535, 10_000),
        (12, 20),
        (22, 25),
        (100, 100),
        (101, 200),
        (480_000, 500_000),
    ],
)
def test_the_axis_top_is_the_next_round_number(value, expected):
    assert _nice_max(value) == pytest.approx(expected)


def test_a_chart_scales_its_axis_to_the_largest_bar():
    svg = str(bar_chart([("a", 9535), ("b", 20)], title="Requests"))
    assert ">10,000<" in svg and "1,000,000" not in svg
