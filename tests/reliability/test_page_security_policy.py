"""Every HTML page carries the Content-Security-Policy, and works under it in Debian's headless
Chromium: the Swagger UI renders its operations, the admin login, change list and statistics
render, the upload page loads, and the browser reports no violation on any of them."""

import base64
import hashlib
import re
from pathlib import Path

import drf_spectacular
import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Page, expect

from core.page_headers import CONTENT_SECURITY_POLICY, SWAGGER_UI_STYLE_HASH
from tests.classification.test_upload_page import DESKTOP, browser  # noqa: F401 (a fixture)
from tests.support.csp import CspWatch
from tests.support.reporting import log_row

PASSWORD = "pw-staff-csp-1"


@pytest.fixture
def page(browser, live_server, transactional_db):  # noqa: F811
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


def open_page(page: Page, url: str) -> CspWatch:
    watch = CspWatch(page)
    response = page.goto(url)
    assert response is not None and response.status == 200, url
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    return watch


def test_the_swagger_ui_renders_its_operations_under_the_policy(page, live_server):
    watch = open_page(page, f"{live_server.url}/api/docs/")

    expect(page.locator(".opblock").first).to_be_visible()
    assert page.locator(".opblock").count() >= 10
    expect(page.get_by_text("/classify-image", exact=True).first).to_be_visible()
    page.locator(".opblock-summary").first.click()  # an operation opens
    expect(page.locator(".opblock-body").first).to_be_visible()
    assert watch.violations() == []


def test_the_admin_login_change_list_and_statistics_work_under_the_policy(page, live_server):
    get_user_model().objects.create_superuser("root", "root@example.com", PASSWORD)
    log_row(url="https://images.example/a.jpg", seconds=0.02, label="tabby")

    watch = open_page(page, f"{live_server.url}/admin/login/?next=/admin/")
    page.get_by_label("Username").fill("root")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(
        page.get_by_role("link", name="Log out").or_(page.get_by_role("button", name="Log out"))
    ).to_be_visible()

    open_page(page, f"{live_server.url}/admin/reporting/requestlog/")
    expect(page.locator("#result_list")).to_be_visible()
    expect(page.get_by_text("tabby").first).to_be_visible()
    page.goto(f"{live_server.url}/admin/reporting/requestlog/statistics/")
    expect(page.locator("svg.chart").first).to_be_visible()
    assert watch.violations() == []


def test_the_upload_page_works_under_the_policy(page, live_server):
    watch = open_page(page, f"{live_server.url}/")
    expect(page.get_by_label("Choose an image")).to_be_attached()
    assert watch.violations() == []


def test_the_swagger_style_hash_is_the_installed_templates():
    template = Path(drf_spectacular.__file__).parent / "templates/drf_spectacular/swagger_ui.html"
    (style,) = re.findall(r"<style>(.*?)</style>", template.read_text(), re.S)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"sha256-{digest}" == SWAGGER_UI_STYLE_HASH


def test_json_answers_carry_no_page_policy(client, db):
    assert "Content-Security-Policy" not in client.get("/health/live")
