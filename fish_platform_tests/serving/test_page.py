"""The page at ``/`` in a real headless Chromium (Debian's, never a Playwright download).

At desktop and phone width: one photo (calibrated percentages, the heat map on and off), several
photos through /predict_batch (one card each, a bad file gets an error card), and the "not sure"
state of a calibrated version that answers ``unknown``. Screenshots go to test-output/; any console
error (a Content-Security-Policy violation is one) fails the test.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from fish_platform_tests.serving.serving_helpers import (
    LABELS_V1,
    TEST_OUTPUT,
    png_bytes,
    promote,
    register_tiny_model,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DEVICES = [("desktop", (1200, 800)), ("phone", (390, 844))]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = CHROMIUM if CHROMIUM.exists() else shutil.which("chromium")
    if not executable:
        pytest.skip("Chromium not installed (apt-get install -y chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Page:
    """A page at one viewport that records console errors and CSP violations."""

    def __init__(self, browser, url: str, viewport: tuple[int, int]) -> None:
        self.page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
        self.width = viewport[0]
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        self.page.on(
            "console", lambda msg: self.errors.append(f"console: {msg.text}") if msg.type == "error" else None
        )
        self.page.goto(url + "/")
        self.page.evaluate(
            "() => document.addEventListener('securitypolicyviolation',"
            " e => console.error('CSP violation: ' + e.violatedDirective))"
        )
        self.page.wait_for_function("() => document.getElementById('model-badge').textContent.includes('v')")

    def shot(self, name: str) -> None:
        TEST_OUTPUT.mkdir(exist_ok=True)
        assert (
            self.page.evaluate("() => document.documentElement.scrollWidth") <= self.width
        )  # no sideways scroll
        self.page.screenshot(path=str(TEST_OUTPUT / f"serving-page-{name}.png"), full_page=True)

    def close(self) -> None:
        self.page.close()
        assert self.errors == []


@pytest.mark.parametrize(("device", "viewport"), DEVICES)
def test_one_photo_with_heat_map(service, browser, fish_photo, device, viewport):
    view = Page(browser, service.url, viewport)
    page = view.page
    try:
        assert service.version in page.inner_text("#model-badge")
        page.set_input_files("#file-input", str(fish_photo))
        page.wait_for_selector("#cards .results li:nth-child(3)", timeout=60_000)
        species = page.locator("#cards .species").all_inner_texts()
        confidences = page.locator("#cards .confidence").all_inner_texts()
        labels = {label.replace("_", " ") for label in service.versions[service.version]}
        assert len(species) == 3 and set(species) <= labels
        assert all(text.endswith("%") for text in confidences)
        assert f"v{service.version}" in page.inner_text("#result-meta")
        assert "not calibrated" in page.inner_text("#calibration-note")  # v1 has no calibration record
        assert page.is_visible("#cards .photo") and not page.is_visible("#cards .heat")

        page.check("#cards .heat-toggle")  # fetches /explain
        page.wait_for_selector("#cards .heat:not(.d-none)", timeout=60_000)
        page.wait_for_function("() => document.querySelector('#cards .heat').naturalWidth > 0")
        assert page.get_attribute("#cards .heat", "src").startswith("blob:")
        assert "Red: where the model saw" in page.inner_text("#cards .heat-note")
        view.shot(f"{device}-heatmap")
        page.uncheck("#cards .heat-toggle")
        assert not page.is_visible("#cards .heat")
    finally:
        view.close()


@pytest.mark.parametrize(("device", "viewport"), DEVICES)
def test_several_photos_one_card_each(service, browser, fish_photo, tmp_path, device, viewport):
    second = tmp_path / "second.png"
    second.write_bytes(png_bytes(seed=808, size=(90, 120)))
    notes = tmp_path / "notes.txt"
    notes.write_text("this is not a fish")
    view = Page(browser, service.url, viewport)
    page = view.page
    try:
        with page.expect_response(lambda r: r.url.endswith("/predict_batch")) as batch:
            page.set_input_files("#file-input", [str(fish_photo), str(notes), str(second)])
        assert batch.value.status == 200
        page.wait_for_selector("#cards .photo-col:nth-child(3) .results li:nth-child(3)", timeout=60_000)
        assert page.locator("#cards .photo-col").count() == 3
        assert page.locator("#cards .results:not(.d-none)").count() == 2
        bad = page.locator("#cards .photo-col").nth(1)
        assert "not an image" in bad.locator(".card-error-message").inner_text()
        assert "3 photos" in page.inner_text("#result-meta")
        view.shot(f"{device}-batch")
    finally:
        view.close()


@pytest.fixture(scope="module")
def calibrated(service):
    """A calibrated version of the same labels whose threshold (0.999) makes every answer unknown."""
    calibration = {
        "temperature": 1.5,
        "threshold": 0.999,
        "score_method": "max_probability",
        "ece_before": 0.1,
        "ece_after": 0.05,
    }
    version = register_tiny_model(service.registry, LABELS_V1, image_size=32, seed=1, calibration=calibration)
    promote(service.registry, version)
    service.versions[version] = LABELS_V1
    service.version = version
    deadline = time.monotonic() + 120
    with service.client() as client:
        while time.monotonic() < deadline and client.get("/readyz").json().get("model_version") != version:
            time.sleep(0.5)
    return version


@pytest.mark.parametrize(("device", "viewport"), DEVICES)
def test_not_sure_shows_the_best_guesses(service, calibrated, browser, fish_photo, device, viewport):
    view = Page(browser, service.url, viewport)
    page = view.page
    try:
        page.set_input_files("#file-input", str(fish_photo))
        page.wait_for_selector("#cards .results li:nth-child(3)", timeout=60_000)
        assert f"v{calibrated}" in page.inner_text("#result-meta")
        assert page.is_visible("#cards .not-sure")
        assert "calibrated: 80 %" in page.inner_text("#calibration-note")
        assert "Not sure" in page.inner_text("#cards .not-sure")
        assert page.get_attribute("#cards .photo-col", "data-index") == "0"
        assert page.locator("#cards .photo-card.border-warning").count() == 1
        assert len(page.locator("#cards .species").all_inner_texts()) == 3  # still the best guesses
        view.shot(f"{device}-not-sure")
    finally:
        view.close()


@pytest.mark.parametrize(("device", "viewport"), DEVICES)
def test_is_this_right_sends_a_correction(service, browser, fish_photo, device, viewport):
    view = Page(browser, service.url, viewport)
    page = view.page
    try:
        with page.expect_response(lambda r: r.url.endswith("/predict")) as predicted:
            page.set_input_files("#file-input", str(fish_photo))
        assert predicted.value.request.headers.get("x-client-id")  # the sticky challenger split's key
        answer = predicted.value.json()
        page.wait_for_selector("#cards .feedback:not(.d-none)", timeout=60_000)
        page.click("#cards .feedback-no")
        options = page.locator("#cards .feedback-species option").evaluate_all("os => os.map(o => o.value)")
        labels = list(service.versions[answer["model_version"]])
        assert options == [*labels, "unknown", "not_a_fish"]  # every species of the served version
        wrong = next(label for label in labels if label != answer["top3"][0]["species"])
        page.select_option("#cards .feedback-species", wrong)
        with page.expect_response(lambda r: r.url.endswith("/feedback")) as sent:
            page.click("#cards .feedback-send")
        assert sent.value.status == 200
        stored = sent.value.json()
        assert (stored["request_id"], stored["correct_label"]) == (answer["request_id"], wrong)
        page.wait_for_selector("#cards .feedback-status.text-success")
        assert "Thanks" in page.inner_text("#cards .feedback-status")
        assert page.is_disabled("#cards .feedback-yes")
        view.shot(f"{device}-feedback")
    finally:
        view.close()
