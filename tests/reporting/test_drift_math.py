import math
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reporting.monitoring.drift import (
    BIN_EDGES,
    CONFIDENCE_EDGES,
    IMAGE_SIZE_EDGES,
    PSI_EPSILON,
    Observation,
    bin_index,
    profile_build,
    psi,
    share_below,
    sorted_sample,
    tag_rate_psi,
)


def bin_labels(name: str) -> list[str]:
    """Readable names of the bins of ``name`` ("0.1-0.2", "<10k px", ...)."""
    edges = BIN_EDGES[name]

    def show(edge: float) -> str:
        if name == "image_size":
            return f"{edge / 1e6:g}M" if edge >= 1e6 else f"{edge / 1e3:g}k"
        return f"{edge:g}"

    if name == "confidence":
        bounds = [0.0, *edges, 1.0]
        return [f"{bounds[i]:.1f}-{bounds[i + 1]:.1f}" for i in range(len(bounds) - 1)]
    labels = [f"<{show(edges[0])}"]
    labels += [f"{show(edges[i])}-{show(edges[i + 1])}" for i in range(len(edges) - 1)]
    labels.append(f">={show(edges[-1])}")
    if name == "image_size":
        labels = [f"{label} px" for label in labels]
    return labels


def test_identical_distributions_have_zero_psi():
    assert psi([10, 20, 30], [1, 2, 3]) == 0.0
    assert psi({"cat": 5, "dog": 5}, {"dog": 40, "cat": 40}) == 0.0


def test_psi_of_a_known_shift():
    # (0.9 - 0.5) ln(0.9 / 0.5) + (0.1 - 0.5) ln(0.1 / 0.5)
    expected = 0.4 * math.log(1.8) - 0.4 * math.log(0.2)
    assert psi([50, 50], [90, 10]) == pytest.approx(expected)
    assert psi([50, 50], [90, 10]) == pytest.approx(0.878890, abs=1e-6)


def test_a_label_unseen_on_one_side_counts_with_the_epsilon_share():
    value = psi({"cat": 10}, {"cat": 5, "dog": 5})
    cat = (0.5 - 1.0) * math.log(0.5 / 1.0)
    dog = (0.5 - PSI_EPSILON) * math.log(0.5 / PSI_EPSILON)
    assert value == pytest.approx(cat + dog)
    assert value > 0.25  # a label the reference never answered is a significant shift


def test_psi_has_no_value_without_observations_on_both_sides():
    assert psi([0, 0], [1, 2]) is None
    assert psi({"cat": 3}, {}) is None


def test_psi_refuses_bins_that_do_not_match():
    with pytest.raises(ValueError):
        psi([1, 2], [1, 2, 3])
    with pytest.raises(TypeError):
        psi({"cat": 1}, [1])


counts = st.lists(st.integers(min_value=0, max_value=1000), min_size=4, max_size=4).filter(any)


@given(counts, counts)
def test_psi_is_never_negative_and_is_symmetric(reference, recent):
    value = psi(reference, recent)
    assert value is not None and value >= 0
    assert value == pytest.approx(psi(recent, reference))


def test_bins_include_their_lower_edge_and_exclude_their_upper_edge():
    assert bin_index(0.0, CONFIDENCE_EDGES) == 0
    assert bin_index(0.0999, CONFIDENCE_EDGES) == 0
    assert bin_index(0.1, CONFIDENCE_EDGES) == 1
    assert bin_index(1.0, CONFIDENCE_EDGES) == 9
    assert bin_index(64 * 48, IMAGE_SIZE_EDGES) == 0
    assert bin_index(10_000_000, IMAGE_SIZE_EDGES) == len(IMAGE_SIZE_EDGES)
    assert bin_labels("confidence")[0] == "0.0-0.1" and bin_labels("confidence")[-1] == "0.9-1.0"
    assert bin_labels("image_size")[0] == "<10k px"
    assert bin_labels("image_size")[-1] == ">=10M px"


def test_the_share_below_a_threshold_is_read_from_the_kept_sample():
    sample = sorted_sample([(i % 100) / 100 for i in range(10_000)], size=1000)
    assert len(sample) == 1000 and sample[0] == 0.0 and sample[-1] == 0.99
    assert share_below(sample, 0.5) == pytest.approx(0.5, abs=0.002)
    assert share_below(sample, 0.0) == 0.0
    assert share_below(sample, 1.0) == 1.0
    assert share_below([], 0.5) is None
    assert sorted_sample([0.3, 0.1, 0.2]) == [0.1, 0.2, 0.3]


def test_a_profile_counts_labels_bins_and_input_statistics():
    observations = [
        Observation("cat", 0.95, 640, 480, 120.0),
        Observation("cat", 0.85, 640, 480, 100.0),
        Observation("dog", 0.45, 90, 100, None),  # no brightness: counted elsewhere
    ]
    profile = profile_build(
        observations, source="images", description="3 images", built_at=datetime.now(UTC)
    )
    assert profile["count"] == 3
    assert profile["labels"] == {"cat": 2, "dog": 1}
    assert profile["confidence"] == [0, 0, 0, 0, 1, 0, 0, 0, 1, 1]
    assert profile["brightness"] == [0, 0, 0, 1, 1, 0, 0, 0, 0, 0]  # 100 and 120 of 255
    assert profile["image_size"] == [1, 0, 0, 0, 2, 0, 0, 0]  # 9k px; 307k px twice
    assert profile["means"] == {"width": 456.667, "height": 353.333, "brightness": 110.0}
    assert share_below(profile["confidence_sample"], 0.5) == pytest.approx(1 / 3)


def test_a_tag_rate_is_compared_as_two_bins():
    assert tag_rate_psi(
        reference_present=10, reference_answers=100, recent_present=30, recent_answers=100
    ) == pytest.approx(0.2 * math.log(3) + 0.2 * math.log(0.9 / 0.7))
    assert tag_rate_psi(
        reference_present=1, reference_answers=10, recent_present=10, recent_answers=100
    ) == pytest.approx(0.0)
    assert (
        tag_rate_psi(reference_present=0, reference_answers=0, recent_present=1, recent_answers=3)
        is None
    )


def test_a_profile_counts_tags_only_for_answers_that_have_them():
    observations = [
        Observation("a", 0.9, tags={"x": True, "y": False}),
        Observation("a", 0.8, tags={"x": True, "y": True}),
        Observation("b", 0.7),
    ]
    profile = profile_build(
        observations, source="images", description="", built_at=datetime(2026, 1, 1, tzinfo=UTC)
    )
    assert profile["tags"] == {"answers": 2, "present": {"x": 2, "y": 1}}
    untagged = profile_build(
        observations[2:], source="images", description="", built_at=datetime(2026, 1, 1, tzinfo=UTC)
    )
    assert "tags" not in untagged
