"""The upload page with a zero-shot model: a labels box while that model is chosen."""

import pytest
from playwright.sync_api import expect

from classification.registry.sources.tiny_clip import square_image
from tests.classification.test_upload_page import browser, page  # noqa: F401 (fixtures)


@pytest.fixture
def red_square(tmp_path):
    path = tmp_path / "red.png"
    square_image("red", seed=21).save(path)
    return path


def test_a_person_types_labels_for_a_zero_shot_model(
    page,  # noqa: F811
    live_server,
    transactional_db,
    tiny_model,
    zero_shot_model,
    red_square,
):
    page.goto(f"{live_server.url}/")
    choice = page.get_by_label("Model", exact=True)
    expect(choice).to_have_value("clip")  # promoted last: the default
    labels = page.locator("#labels")
    expect(labels).to_be_visible()
    labels.fill("a cat\nblue square\n\nred square\n")
    page.get_by_label("Choose an image").set_input_files(red_square)
    expect(page.locator("#result-label")).to_have_text("red square")
    expect(page.locator("#result-bars li .bar__label")).to_have_text(
        ["red square", "a cat", "blue square"], ignore_case=False
    )

    choice.select_option("tiny")  # a classifier: its labels are fixed
    expect(page.locator("#labels-field")).to_be_hidden()
