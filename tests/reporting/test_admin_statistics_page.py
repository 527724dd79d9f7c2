"""The admin statistics page in Debian's headless Chromium, as staff see it, with a day's
traffic: its charts render, and it makes the documentation's picture of the page."""

import random
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone
from playwright.sync_api import expect

from tests.classification.test_upload_page import DESKTOP, browser  # noqa: F401 (a fixture)
from tests.support.pictures import documentation_picture
from tests.support.reporting import log_row

STATISTICS = "/admin/reporting/requestlog/statistics/"
LABELS = ["Egyptian cat", "espresso", "tabby", "golden retriever", "teapot", "tiger cat"]


@pytest.fixture
def a_day_of_traffic(transactional_db):
    """Requests over the last hours: uncached and cached answers, a few errors."""
    rng = random.Random(7)
    now = timezone.now()
    for index in range(160):
        at = now - timedelta(minutes=rng.uniform(1, 600))
        if index % 23 == 0:
            log_row(seconds=0.003, at=at, status=415, error_code="unsupported_image_type")
            continue
        cached = index % 3 == 0
        log_row(
            url=f"https://images.example/{index % 12}.jpg" if index % 2 else "",
            seconds=rng.uniform(0.001, 0.004) if cached else rng.uniform(0.009, 0.03),
            at=at,
            cached=cached,
            cache_kind=("url" if index % 2 else "image") if cached else None,
            label=rng.choice(LABELS),
            confidence=rng.uniform(0.3, 0.98),
        )


def test_the_documentation_picture_of_the_statistics_page(browser, live_server, a_day_of_traffic):  # noqa: F811
    staff = get_user_model().objects.create_superuser("alice", password="pw-alice-1")
    client = Client()
    client.force_login(staff)
    context = browser.new_context(viewport=DESKTOP)
    context.add_cookies(
        [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}]
    )
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}{STATISTICS}")
        expect(page.get_by_role("heading", name="Statistics").first).to_be_visible()
        expect(page.locator("svg[role=img]")).to_have_count(6)
        documentation_picture(page, "admin-statistics")
    finally:
        context.close()
