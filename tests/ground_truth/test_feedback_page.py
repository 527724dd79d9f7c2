"""'Right?' under each answer of the upload page, used in Debian's headless Chromium (driven by
Playwright) as a photographer would: yes, or the right label picked from a searchable list (a
multi-task model's category and tags; a zero-shot request's own labels), sent to POST /feedback
with the image, stored, and counted on the staff's statistics page."""

import re
import secrets
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from PIL import Image
from playwright.sync_api import Browser, Page, expect

from classification.registry.sources.tiny_clip import square_image
from ground_truth.models import Feedback
from reporting.models import RequestLog
from tests.classification.conftest import lite0_source  # noqa: F401 (a fixture)
from tests.classification.test_upload_page import (  # noqa: F401 (browser, default_model, image_server: fixtures)
    ARTIFACTS,
    DESKTOP,
    PHONE,
    browser,
    default_model,
    image_server,
)
from tests.support.csp import CspWatch
from tests.support.images import encode, noise_image
from tests.support.models import TINY_LABELS, TINY_TAG_LABELS
from tests.support.pictures import documentation_picture

STAFF_PASSWORD = "pw-staff-feedback-1"


@pytest.fixture(autouse=True)
def _feedback_images(settings, tmp_path: Path) -> Path:
    """Images sent with feedback are kept in this test's own folder."""
    settings.FEEDBACK_IMAGE_DIR = tmp_path / "feedback-images"
    return settings.FEEDBACK_IMAGE_DIR


@pytest.fixture
def page(browser: Browser, live_server, transactional_db):  # noqa: F811
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def photo(tmp_path: Path):
    """A JPEG no earlier run has sent (so a shared result cache cannot already know it)."""

    def make(name: str = "photo.jpg") -> Path:
        path = tmp_path / name
        path.write_bytes(encode(noise_image(size=(96, 72), seed=secrets.randbits(32)), "JPEG"))
        return path

    return make


def _classify(page: Page, path: Path) -> str:
    """Upload a file and wait for its answer and the 'Right?' under it; return the label shown."""
    page.get_by_label("Choose an image").set_input_files(path)
    expect(page.locator("#result")).to_be_visible()
    expect(page.locator("#outcome")).to_have_attribute("aria-busy", "false")
    expect(page.get_by_role("group", name="Right?")).to_be_visible()
    return page.locator("#result-label").text_content() or ""


def _sign_in_as_staff(page: Page, live_server) -> None:
    staff = get_user_model().objects.create_user("alice", password=STAFF_PASSWORD, is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_feedback"))
    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(STAFF_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(
        page.get_by_role("link", name="Log out").or_(page.get_by_role("button", name="Log out"))
    ).to_be_visible()


def _statistics(page: Page, live_server, version: str) -> tuple[int, list[list[str]]]:
    """What the ground-truth statistics page says of a version: its counted feedback, and its
    confusions (true label, answered, count)."""
    page.goto(f"{live_server.url}/admin/ground_truth/statistics/")
    accuracy = page.locator("table", has=page.get_by_text(f"{version}: accuracy from feedback"))
    counted = accuracy.get_by_role("row", name="counted").get_by_role("cell")
    confusions = page.locator("table", has=page.get_by_text(f"{version}: top confusions"))
    rows = [
        row.locator("th, td").all_text_contents()
        for row in confusions.locator("tbody tr").all()
        if row.locator("th").count()
    ]
    return int(counted.first.text_content() or ""), rows


def _tab_to(page: Page, element_id: str, *, limit: int = 30) -> list[str]:
    """Press Tab until the element has the focus; return the ids passed on the way."""
    passed = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.id")
        passed.append(focused)
        if focused == element_id:
            return passed
    raise AssertionError(f"Tab never reached #{element_id}: {passed}")


def test_a_wrong_answer_corrected_from_the_list_is_stored_and_counted_for_staff(
    page, live_server, tiny_model, photo
):
    _sign_in_as_staff(page, live_server)
    assert _statistics(page, live_server, "tiny v1") == (0, [])
    watch = CspWatch(page)
    page.goto(f"{live_server.url}/")

    predicted = _classify(page, photo("meadow.jpg"))
    right = next(label for label in TINY_LABELS if label != predicted)
    page.get_by_role("button", name="No, it is…").click()
    search = page.get_by_role("combobox", name="The right label")
    expect(search).to_be_focused()
    search.press_sequentially(right[:2])
    options = page.get_by_role("option")
    expect(options.first).to_be_visible()
    assert all(right[:2] in option for option in options.all_text_contents())
    page.get_by_role("option", name=right, exact=True).click()
    expect(search).to_have_value(right)
    page.get_by_role("button", name="Send").click()

    expect(page.get_by_role("status")).to_have_text(f"Thanks! You said it is {right}.")
    expect(page.locator("#feedback-correction")).to_be_hidden()
    feedback = Feedback.objects.get()
    assert (feedback.correct, feedback.label, feedback.predicted_label) == (False, right, predicted)
    assert feedback.user is not None and feedback.user.username == "alice"
    assert feedback.image  # the page sent the uploaded image along, and it was kept
    assert watch.violations() == []

    # The staff's statistics page counts it, and shows the confusion.
    assert _statistics(page, live_server, "tiny v1") == (1, [[right, predicted, "1"]])


def test_a_keyboard_alone_says_yes_then_corrects_it_and_the_second_replaces_the_first(
    page, live_server, tiny_model, photo
):
    watch = CspWatch(page)
    page.goto(f"{live_server.url}/")
    predicted = _classify(page, photo("keys.jpg"))

    page.locator("#image-url").focus()
    _tab_to(page, "feedback-yes")
    page.keyboard.press("Enter")
    status = page.get_by_role("status")
    expect(status).to_have_text(f"Thanks! You said {predicted} is right.")
    expect(page.locator("#feedback-yes")).to_be_focused()  # the focus stays where it was
    feedback = Feedback.objects.get()
    assert (feedback.correct, feedback.label) == (True, predicted)

    page.keyboard.press("Tab")
    expect(page.locator("#feedback-no")).to_be_focused()
    page.keyboard.press("Space")
    search = page.get_by_role("combobox", name="The right label")
    expect(search).to_be_focused()  # the list opens where the typing goes
    expect(page.locator("#feedback-no")).to_have_attribute("aria-expanded", "true")
    right = next(label for label in TINY_LABELS if label != predicted)
    page.keyboard.type(right[0])
    expect(page.get_by_role("option").first).to_be_visible()
    page.keyboard.press("ArrowDown")
    expect(search).to_have_attribute("aria-activedescendant", "feedback-option-0")
    expect(page.locator("#feedback-option-0")).to_have_attribute("aria-selected", "true")
    # Walk down to the label (the first match need not be it), then pick it with Enter.
    while page.locator(f"#{search.get_attribute('aria-activedescendant')}").text_content() != right:
        page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    expect(search).to_have_value(right)
    expect(search).to_have_attribute("aria-expanded", "false")
    page.keyboard.press("Enter")  # the list closed: Enter sends

    expect(status).to_have_text(f"Thanks! You said it is {right}.")
    expect(page.locator("#feedback-no")).to_be_focused()  # back on the control that opened it
    feedback = Feedback.objects.get()  # still one: the second replaced the first
    assert (feedback.correct, feedback.label) == (False, right)
    assert watch.violations() == []


def test_a_new_answer_resets_the_control_and_the_history_remembers_what_was_said(
    page, live_server, tiny_model, photo
):
    page.goto(f"{live_server.url}/")
    predicted = _classify(page, photo("first.jpg"))
    page.get_by_role("button", name="Yes").click()
    status = page.get_by_role("status")
    expect(status).to_have_text(f"Thanks! You said {predicted} is right.")
    page.get_by_role("button", name="No, it is…").click()
    expect(page.locator("#feedback-correction")).to_be_visible()

    _classify(page, photo("second.jpg"))
    expect(page.locator("#feedback-correction")).to_be_hidden()
    expect(page.locator("#feedback-no")).to_have_attribute("aria-expanded", "false")
    expect(page.locator("#feedback-status")).to_be_empty()

    page.locator("#history li").last.get_by_role("button").click()  # the first answer again
    expect(status).to_have_text(f"Thanks! You said {predicted} is right.")


def test_at_375_px_the_open_list_fits_the_screen(browser, live_server, tiny_model, photo):  # noqa: F811
    context = browser.new_context(viewport=PHONE)
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/")
        _classify(page, photo("phone.jpg"))
        page.get_by_role("button", name="No, it is…").click()
        expect(page.get_by_role("option")).to_have_count(len(TINY_LABELS))
        assert page.evaluate(
            "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        )
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=ARTIFACTS / "phone-feedback.png", full_page=True)
    finally:
        context.close()


def test_an_answer_to_an_image_address_gets_feedback_without_an_image(
    page,
    live_server,
    tiny_model,
    image_server,  # noqa: F811
    tmp_path,
    settings,
):
    settings.IMAGE_FETCH_PRIVATE_ALLOWLIST = ["127.0.0.0/8"]
    (tmp_path / "served" / "bird.png").write_bytes(
        encode(noise_image(size=(80, 60), seed=secrets.randbits(32)), "PNG")
    )
    page.goto(f"{live_server.url}/")
    page.get_by_label("Or an image address (URL)").fill(f"{image_server}/bird.png")
    page.get_by_role("button", name="Classify").click()
    expect(page.get_by_role("group", name="Right?")).to_be_visible()
    expect(page.locator("#feedback-privacy")).to_have_text("Your answer helps improve the model.")

    page.get_by_role("button", name="Yes").click()

    expect(page.get_by_role("status")).to_contain_text("Thanks!")
    feedback = Feedback.objects.get()
    assert (feedback.correct, feedback.image) == (True, "")


def test_a_label_not_in_the_list_is_refused_on_the_page(page, live_server, tiny_model, photo):
    page.goto(f"{live_server.url}/")
    _classify(page, photo())
    page.get_by_role("button", name="No, it is…").click()
    search = page.get_by_role("combobox", name="The right label")
    search.fill("a unicorn")
    expect(page.locator("#feedback-label-hint")).to_have_text(
        "No label matches. Try fewer letters."
    )
    page.get_by_role("button", name="Send").click()

    expect(page.get_by_role("status")).to_have_text("Pick a label from the list.")
    expect(search).to_be_focused()
    assert not Feedback.objects.exists()


def test_an_error_from_the_service_is_shown_as_its_sentence(page, live_server, tiny_model, photo):
    page.goto(f"{live_server.url}/")
    _classify(page, photo())
    # The request's log row is gone (deleted at a user's request, say): the API's 404.
    RequestLog.objects.all().delete()
    page.get_by_role("button", name="Yes").click()

    status = page.get_by_role("status")
    expect(status).to_have_class(re.compile(r"\bfeedback__status--error\b"))
    expect(status).not_to_have_text(re.compile(r"Thanks|\{"))
    assert not Feedback.objects.exists()


def test_a_multi_task_answer_is_corrected_with_its_category_and_tag_toggles(
    page, live_server, tiny_multi_task_model, tmp_path
):
    reddish = tmp_path / "reddish.png"
    reddish.write_bytes(encode(noise_image(size=(64, 64), seed=secrets.randbits(32)), "PNG"))
    page.goto(f"{live_server.url}/")
    predicted = _classify(page, reddish)
    present = page.locator("#result-tags .chip--present").all_text_contents()

    page.get_by_role("button", name="No, it is…").click()
    tags = page.get_by_role("group", name="Tags present")
    expect(tags.get_by_role("checkbox")).to_have_count(len(TINY_TAG_LABELS))
    for tag in TINY_TAG_LABELS:  # set as the answer had them
        box = tags.get_by_role("checkbox", name=tag)
        shown_present = any(chip.startswith(f"{tag} ") for chip in present)
        (expect(box).to_be_checked if shown_present else expect(box).not_to_be_checked)()
    page.get_by_role("combobox", name="The right label").click()
    expect(page.get_by_role("option")).to_have_count(len(TINY_LABELS))  # the category list
    right = next(label for label in TINY_LABELS if label != predicted)
    page.get_by_role("option", name=right, exact=True).click()
    tags.get_by_role("checkbox", name="warm").check()
    tags.get_by_role("checkbox", name="cool").uncheck()
    page.get_by_role("button", name="Send").click()

    expect(page.get_by_role("status")).to_have_text(f"Thanks! You said it is {right}.")
    feedback = Feedback.objects.get()
    assert (feedback.correct, feedback.label, feedback.tags) == (False, right, ["warm"])


def test_a_zero_shot_answer_offers_the_labels_the_request_sent(
    page,
    live_server,
    zero_shot_model,
    tmp_path,
):
    red = tmp_path / "red.png"
    square_image("red", seed=21).save(red)
    page.goto(f"{live_server.url}/")
    page.locator("#labels").fill("a cat\nred square\nblue square\n")
    predicted = _classify(page, red)
    assert predicted == "red square"

    page.get_by_role("button", name="No, it is…").click()
    page.get_by_role("combobox", name="The right label").press_sequentially("squ")
    # The labels sent, not the model's own (red, green and blue square).
    expect(page.get_by_role("option")).to_have_text(["red square", "blue square"])
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Send").click()

    expect(page.get_by_role("status")).to_have_text("Thanks! You said it is blue square.")
    feedback = Feedback.objects.get()
    assert (feedback.correct, feedback.label) == (False, "blue square")


def test_the_page_asks_right_only_where_the_feedback_api_is_routed(
    client, db, tiny_model, settings
):
    body = client.get("/").content.decode()
    assert 'data-feedback-url="/feedback"' in body
    assert 'data-models-url="/models"' in body
    assert "classification/feedback.js" in body

    settings.ROOT_URLCONF = "tests.ground_truth.urls_without_feedback"
    response = client.get("/")
    assert response.status_code == 200
    body = response.content.decode()
    assert 'id="feedback"' not in body
    assert "feedback.js" not in body
    assert 'id="result"' in body  # the rest of the page is as before


@pytest.mark.slow
def test_the_documentation_picture_of_a_photo_corrected_from_the_list(
    page,
    live_server,
    default_model,  # noqa: F811
    tmp_path,
):
    from skimage import data

    coffee = tmp_path / "coffee.jpg"
    Image.fromarray(data.coffee()).save(coffee)
    page.goto(f"{live_server.url}/")
    assert _classify(page, coffee) == "espresso"

    page.get_by_role("button", name="No, it is…").click()
    page.get_by_role("combobox", name="The right label").press_sequentially("cup")
    expect(page.get_by_role("option", name="cup", exact=True)).to_be_visible()
    page.keyboard.press("ArrowDown")
    documentation_picture(page, "upload-page-feedback")
