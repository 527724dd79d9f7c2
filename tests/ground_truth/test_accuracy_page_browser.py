"""The ground truth statistics page in Debian's headless Chromium, as staff see it: it renders
its charts and tables under the Content-Security-Policy with no violation, and is reached from
the admin index and the request statistics by keyboard."""

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from core.page_headers import CONTENT_SECURITY_POLICY
from tests.classification.test_upload_page import DESKTOP, browser  # noqa: F401 (a fixture)
from tests.ground_truth.support_stats import feedback_row, model_version_row, shadow_row
from tests.support.csp import CspWatch

PASSWORD = "pw-staff-gt-1"
PAGE = "/admin/ground_truth/statistics/"


@pytest.fixture
def page(browser, live_server, transactional_db):  # noqa: F811
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def feedback(transactional_db):
    version = model_version_row()
    for index in range(12):
        feedback_row(version, confidence=0.5 + index * 0.04, label=None if index % 4 else "dog")
    candidate = model_version_row(version=2, stage="staging", shadow_share=0.5)
    shadow_row(candidate, request_id="shadowed", production_label="cat", label="cat")


def test_staff_reach_the_page_by_keyboard_and_it_renders_under_the_policy(
    page, live_server, feedback
):
    get_user_model().objects.create_superuser("root", "root@example.com", PASSWORD)
    watch = CspWatch(page)
    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.get_by_label("Username").fill("root")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Password").press("Enter")

    link = page.get_by_role("link", name="Statistics", exact=True)
    link.focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{live_server.url}{PAGE}")
    response = page.reload()
    assert response is not None and response.status == 200
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY

    expect(page.get_by_role("heading", name="tiny v1 (production)")).to_be_visible()
    expect(page.locator("svg.chart")).to_have_count(2)
    expect(page.get_by_role("table", name="tiny v1: accuracy from feedback")).to_be_visible()
    expect(page.get_by_role("table", name="Shadowed versions against production")).to_contain_text(
        "tiny v2 against v1"
    )
    page.get_by_role("link", name="request statistics").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("link", name="ground truth statistics")).to_be_visible()
    assert watch.violations() == []
