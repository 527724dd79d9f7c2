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


def test_long_labels_are_shortened_to_their_bar_with_the_whole_label_in_the_tooltip():
    wide = str(bar_chart([("authentication_failed", 2), ("throttled", 1)], title="Errors"))
    assert ">authentication_failed</text>" in wide  # room enough: the whole label
    crowded = [(f"West Highland White Terrier {i}", i + 1) for i in range(12)]
    svg = str(bar_chart(crowded, title="Top labels"))
    assert "West Highland White Terrier 3: 4" in svg  # the bar's tooltip keeps it whole
    assert ">West Highland White Terrier 3</text>" not in svg
    assert "\u2026</text>" in svg
