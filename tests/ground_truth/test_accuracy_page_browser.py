"""The ground truth statistics page in Debian's headless Chromium, as staff see it: it renders
its charts and tables under the Content-Security-Policy with no violation, is reached from
the admin index and the request statistics by keyboard, and makes the documentation's picture."""

import random
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from playwright.sync_api import expect

from core.page_headers import CONTENT_SECURITY_POLICY
from ground_truth.models import Feedback
from tests.classification.test_upload_page import DESKTOP, browser  # noqa: F401 (a fixture)
from tests.ground_truth.support_stats import feedback_row, model_version_row, shadow_row
from tests.support.csp import CspWatch
from tests.support.pictures import documentation_picture

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
    """A week of feedback on tiny v1, surer answers more often right; tiny v2 shadowed."""
    rng = random.Random(5)
    version = model_version_row()
    now = timezone.now()
    logs = []
    for index in range(120):
        confidence = rng.uniform(0.3, 0.99)
        right = rng.random() < confidence - 0.05
        predicted = rng.choice(["cat", "dog", "fox"])
        wrong = rng.choice([label for label in ["cat", "dog", "fox"] if label != predicted])
        logs.append(
            feedback_row(
                version,
                predicted=predicted,
                label=None if right else wrong,
                confidence=confidence,
                review=Feedback.Review.TRUSTED if index % 3 == 0 else Feedback.Review.PENDING,
                at=now - timedelta(days=index % 7, minutes=rng.uniform(1, 600)),
            ).request_log
        )
    candidate = model_version_row(version=2, stage="staging", shadow_share=0.5)
    for log in logs[:40]:
        label = log.top_label if rng.random() < 0.9 else "fox"
        shadow_row(
            candidate,
            request_id=log.request_id,
            production_label=log.top_label,
            label=label,
            production=version,
            latency=rng.uniform(0.01, 0.03),
        )


def test_the_documentation_picture_of_the_ground_truth_page_by_keyboard_under_the_policy(
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
    assert watch.violations() == []  # read before the next page replaces the window's list
    documentation_picture(page, "admin-ground-truth")
    page.get_by_role("link", name="request statistics").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("link", name="ground truth statistics")).to_be_visible()
    assert watch.violations() == []
