"""The upload page at /, used in Debian's headless Chromium (driven by Playwright) as a
photographer would: pick, drop or paste an image or its address, and read the answer."""

import functools
import http.server
import os
import re
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from PIL import Image
from playwright.sync_api import Browser, Page, expect, sync_playwright

from bench.loopback import free_port
from tests.support.images import encode, noise_image
from tests.support.models import TINY_LABELS
from tests.support.paths import ROOT

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts" / "upload-page"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 740}
PERCENT = re.compile(r"^\d{1,3}\.\d%$")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"No Chromium at {CHROMIUM}: run 'apt-get install -y chromium' (or make test).")
    # Playwright's sync API keeps its asyncio loop registered on this thread while it runs, so
    # Django would refuse the fixtures' database calls as if they came from async code. They
    # do not run concurrently with anything: allow them for as long as the browser is open.
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _open_page(browser: Browser, viewport: dict[str, int]) -> Iterator[Page]:
    context = browser.new_context(viewport=viewport)
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    yield from _open_page(browser, DESKTOP)


@pytest.fixture
def phone_page(browser: Browser) -> Iterator[Page]:
    yield from _open_page(browser, PHONE)


@pytest.fixture
def home(live_server, transactional_db, tiny_model) -> str:
    """The page's address, served by the live server with the tiny model in production."""
    return f"{live_server.url}/"


@pytest.fixture
def photo(tmp_path: Path):
    """Write a JPEG no earlier run has sent (so a shared result cache cannot already know it)."""

    def make(name: str = "photo.jpg") -> Path:
        path = tmp_path / name
        path.write_bytes(encode(noise_image(size=(320, 240), seed=secrets.randbits(32)), "JPEG"))
        return path

    return make


@pytest.fixture
def image_server(tmp_path: Path) -> Iterator[str]:
    """A loopback HTTP server (in a thread) serving the files of a folder; yields its base URL."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def _screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


def _choose(page: Page, path: Path) -> None:
    page.get_by_label("Choose an image").set_input_files(path)


def _expect_result(page: Page) -> str:
    """Wait for a result; check its bars and details; return the label shown."""
    expect(page.locator("#result")).to_be_visible()
    expect(page.locator("#outcome")).to_have_attribute("aria-busy", "false")
    label = page.locator("#result-label").text_content()
    assert label in TINY_LABELS
    bars = page.locator("#result-bars li")
    # top_k=5 was asked; the tiny model knows 3 labels.
    expect(bars).to_have_count(len(TINY_LABELS))
    assert bars.locator(".bar__label").all_text_contents()[0] == label
    values = bars.locator(".bar__value").all_text_contents()
    assert all(PERCENT.match(value) for value in values), values
    assert [float(v[:-1]) for v in values] == sorted((float(v[:-1]) for v in values), reverse=True)
    assert page.locator("#result-confidence").text_content() == values[0]
    expect(page.locator("#result-model")).to_have_text("Model tiny v1")
    expect(page.locator("#result-time")).to_have_text(re.compile(r"^Processed in \d+(\.\d+)? m?s$"))
    expect(page.locator("#status")).to_contain_text(f"Best match: {label}")
    return label


def _has_no_horizontal_scroll(page: Page) -> bool:
    return page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )


def test_an_uploaded_jpeg_shows_its_label_and_its_predictions_as_bars(page, home, photo):
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(home)
    expect(page.get_by_role("heading", name="What is in your photo?")).to_be_visible()

    _choose(page, photo("meadow.jpg"))

    label = _expect_result(page)
    expect(page.locator("#preview-image")).to_have_attribute("src", re.compile(r"^blob:"))
    expect(page.locator("#result-cached")).to_be_hidden()
    expect(page.locator("#intake-error")).to_be_hidden()
    history = page.locator("#history li")
    expect(history).to_have_count(1)
    expect(history.first).to_contain_text(label)
    _screenshot(page, "desktop-result")
    # Everything the page loaded came from the service itself: no CDN, no external font.
    origins = {urlsplit(url).netloc for url in requested if not url.startswith(("blob:", "data:"))}
    assert origins == {urlsplit(home).netloc}, origins


def test_the_same_file_uploaded_again_is_marked_from_cache(page, home, photo):
    # Needs the result cache: the second identical upload answers with "cached": true.
    image = photo("twice.jpg")
    page.goto(home)

    _choose(page, image)
    first_label = _expect_result(page)
    expect(page.locator("#result-cached")).to_be_hidden()

    _choose(page, image)
    expect(page.locator("#result-cached")).to_be_visible()
    expect(page.locator("#result-cached")).to_have_text("From cache")
    assert _expect_result(page) == first_label
    expect(page.locator("#status")).to_contain_text("(from cache)")
    expect(page.locator("#history li")).to_have_count(2)
    expect(page.locator("#history li").first).to_contain_text("cached")
    _screenshot(page, "desktop-cached")


def test_a_text_file_named_jpg_shows_a_sentence_next_to_the_input(page, home, photo, tmp_path):
    fake = tmp_path / "holiday.jpg"
    fake.write_text("These are my holiday notes, not a photo.\n")
    page.goto(home)

    _choose(page, fake)

    error = page.locator("#intake-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("This file is not an image the service can read.")
    assert "{" not in error.text_content()
    expect(page.locator("#result")).to_be_hidden()
    expect(page.locator("#status")).to_have_text("No result for this image.")
    # The error sits inside the form with the inputs, and the inputs point to it.
    expect(page.locator("#classify-form #intake-error")).to_have_count(1)
    expect(page.get_by_label("Choose an image")).to_have_attribute(
        "aria-describedby", re.compile(r"\bintake-error\b")
    )
    _screenshot(page, "desktop-error")

    # The page stays usable: the next image is classified and the error goes away.
    _choose(page, photo("real.jpg"))
    _expect_result(page)
    expect(error).to_be_hidden()


def test_an_image_address_served_on_loopback_is_classified(
    page, home, image_server, tmp_path, settings
):
    # Needs the URL intake ("image_url"). The fetcher refuses loopback unless allowed.
    settings.IMAGE_FETCH_PRIVATE_ALLOWLIST = ["127.0.0.0/8"]
    (tmp_path / "served" / "bird.png").write_bytes(
        encode(noise_image(size=(200, 150), seed=secrets.randbits(32)), "PNG")
    )
    address = f"{image_server}/bird.png"
    page.goto(home)

    page.get_by_label("Or an image address (URL)").fill(address)
    page.get_by_role("button", name="Classify").click()

    _expect_result(page)
    expect(page.locator("#preview-image")).to_have_attribute("src", address)
    expect(page.locator("#history li")).to_have_count(1)

    # Nothing listens on this port: a sentence, not a blank page, and the last result stays
    # in the history.
    page.get_by_label("Or an image address (URL)").fill(f"http://127.0.0.1:{free_port()}/gone.png")
    page.get_by_role("button", name="Classify").click()
    expect(page.locator("#intake-error")).to_contain_text("could not be reached")
    expect(page.locator("#result")).to_be_hidden()
    expect(page.locator("#history li")).to_have_count(1)


def test_a_malformed_or_missing_address_gets_a_sentence_before_any_request(page, home):
    posted: list[str] = []
    page.on(
        "request", lambda request: posted.append(request.url) if request.method == "POST" else None
    )
    page.goto(home)
    field = page.get_by_label("Or an image address (URL)")

    field.fill("not an address")
    field.press("Enter")
    expect(page.locator("#intake-error")).to_have_text(
        re.compile(r"does not look like an image address")
    )

    field.fill("")
    page.get_by_role("button", name="Classify").click()
    expect(page.locator("#intake-error")).to_have_text(
        "Paste an image address first, or choose a file."
    )
    assert posted == []


def test_a_dropped_image_and_a_pasted_image_are_classified(page, home, photo):
    page.goto(home)
    dropped, pasted = photo("dropped.jpg").read_bytes(), photo("pasted.jpg").read_bytes()

    _send_file_event(page, "drop", dropped, "dropped.jpg")
    _expect_result(page)
    _send_file_event(page, "paste", pasted, "")
    expect(page.locator("#history li")).to_have_count(2)
    _expect_result(page)
    expect(page.locator("#history li").first).to_contain_text(
        page.locator("#result-label").text_content()
    )


def _send_file_event(page: Page, kind: str, data: bytes, name: str) -> None:
    """Dispatch a real drop (on the drop zone) or paste event carrying an image file."""
    page.evaluate(
        """([kind, bytes, name]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], name, {type: "image/jpeg"}));
            const init = {bubbles: true, cancelable: true};
            if (kind === "drop") {
                init.dataTransfer = transfer;
                document.getElementById("dropzone").dispatchEvent(new DragEvent("drop", init));
            } else {
                init.clipboardData = transfer;
                document.body.dispatchEvent(new ClipboardEvent("paste", init));
            }
        }""",
        [kind, list(data), name],
    )


def test_at_375_px_the_page_fits_the_screen_in_result_and_error_states(
    phone_page, home, photo, tmp_path
):
    page = phone_page
    page.goto(home)
    assert _has_no_horizontal_scroll(page)

    _choose(page, photo("phone.jpg"))
    _expect_result(page)
    assert _has_no_horizontal_scroll(page)
    _screenshot(page, "phone-result")

    page.get_by_label("Or an image address (URL)").fill(
        "https://example.com/a/very/long/path/that/does/not/fit/on/a/phone/screen/photo.jpg"
    )
    fake = tmp_path / "a-rather-long-file-name-for-a-small-screen-not-really-a.jpg"
    fake.write_text("plain text")
    _choose(page, fake)
    expect(page.locator("#intake-error")).to_be_visible()
    assert _has_no_horizontal_scroll(page)
    _screenshot(page, "phone-error")


def test_keyboard_users_reach_the_file_picker_and_the_address_field_in_order(page, home):
    page.goto(home)
    page.keyboard.press("Tab")  # skip link
    focused = []
    for _ in range(5):
        page.keyboard.press("Tab")
        focused.append(
            page.evaluate("document.activeElement.id || document.activeElement.textContent")
        )
        if focused[-1] == "image-file":
            # The file input itself is hidden: its visible button shows the focus ring.
            button = page.locator("label[for=image-file]")
            assert button.evaluate("e => getComputedStyle(e).outlineStyle") == "solid"
    assert focused.index("image-file") < focused.index("image-url") < focused.index("url-submit")


def test_signed_in_staff_see_the_statistics_link_and_classify_with_the_csrf_token(
    browser, home, photo, live_server
):
    staff = get_user_model().objects.create_user("alice", password="pw-alice-1", is_staff=True)
    client = Client()
    client.force_login(staff)
    context = browser.new_context(viewport=DESKTOP)
    context.add_cookies(
        [
            {
                "name": "sessionid",
                "value": client.cookies["sessionid"].value,
                "url": live_server.url,
            }
        ]
    )
    page = context.new_page()
    try:
        page.goto(home)
        expect(page.get_by_role("link", name="Statistics")).to_have_attribute(
            "href", "/admin/reporting/requestlog/statistics/"
        )
        # A signed-in session makes the API check CSRF: the page sends the token.
        _choose(page, photo("staff.jpg"))
        _expect_result(page)
    finally:
        context.close()


def test_anonymous_visitors_get_the_page_without_the_statistics_link(client, db):
    response = client.get("/")
    assert response.status_code == 200
    body = response.content.decode()
    assert 'name="csrfmiddlewaretoken"' in body
    assert "csrftoken" in response.cookies
    assert "Statistics" not in body
    assert re.findall(r'(?:src|href)="(https?:)?//', body) == []  # nothing from elsewhere


def test_a_person_can_choose_among_the_production_models(
    page, home, photo, register_model, tiny_keras_path
):
    # A second production model under another name; 'tiny' was promoted first.
    register_model(tiny_keras_path, name="tiny-copy", labels=TINY_LABELS)
    page.goto(home)
    choice = page.get_by_label("Model")
    expect(choice.locator("option")).to_have_count(2)
    expect(choice).to_have_value("tiny-copy")  # the default (most recently promoted) is chosen

    choice.select_option("tiny")
    _choose(page, photo())
    _expect_result(page)  # says "Model tiny v1"

    choice.select_option("tiny-copy")
    _choose(page, photo())
    expect(page.locator("#result-model")).to_have_text("Model tiny-copy v1")


def test_with_one_production_model_the_page_offers_no_choice(page, home):
    page.goto(home)
    expect(page.locator("#model-choice")).to_have_count(0)


@pytest.fixture
def default_model(register_model, lite0_source):
    """The default model of 'make run' (EfficientNet-Lite0), from its wheels, in production."""
    source = lite0_source  # built once per session
    return register_model(
        source.artifact_path,
        name="imagenet-lite0",
        labels=source.labels,
        input_size=source.input_size,
        source=source.source,
        preprocessing=source.preprocessing,
    )


@pytest.mark.slow
def test_the_documentation_picture_of_a_photo_classified_by_the_default_model(
    page, live_server, transactional_db, default_model, tmp_path
):
    from skimage import data

    from tests.support.pictures import documentation_picture

    coffee = tmp_path / "coffee.jpg"
    Image.fromarray(data.coffee()).save(coffee)
    page.goto(f"{live_server.url}/")

    _choose(page, coffee)

    expect(page.locator("#result")).to_be_visible()
    expect(page.locator("#result-label")).to_have_text("espresso")
    expect(page.locator("#result-model")).to_have_text("Model imagenet-lite0 v1")
    expect(page.locator("#result-bars li")).to_have_count(5)
    documentation_picture(page, "upload-page")
