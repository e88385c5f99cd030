"""The page at ``/`` in a real headless Chromium (Debian's, never a Playwright download)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fish_platform_tests.serving.serving_helpers import TEST_OUTPUT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

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


@pytest.mark.parametrize(("device", "viewport"), [("desktop", (1200, 800)), ("phone", (390, 844))])
def test_upload_photo_then_text_file(service, browser, fish_photo, tmp_path, device, viewport):
    TEST_OUTPUT.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    console_errors: list[str] = []
    page.on("pageerror", lambda exc: console_errors.append(str(exc)))
    try:
        page.goto(service.url + "/")
        page.wait_for_function("document.getElementById('model-badge').textContent.includes('v')")
        assert service.version in page.inner_text("#model-badge")

        page.set_input_files("#file-input", str(fish_photo))
        page.wait_for_selector("#results li:nth-child(3)", timeout=60_000)
        species = page.locator("#results .species").all_inner_texts()
        confidences = page.locator("#results .confidence").all_inner_texts()
        labels = {label.replace("_", " ") for label in service.versions[service.version]}
        assert len(species) == 3 and set(species) <= labels
        assert all(text.endswith("%") for text in confidences)
        assert f"v{service.version}" in page.inner_text("#result-meta")
        assert page.is_visible("#preview")
        # Usable at this width: nothing sticks out sideways.
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport[0]
        page.screenshot(path=str(TEST_OUTPUT / f"serving-page-{device}.png"), full_page=True)

        notes = tmp_path / "notes.txt"
        notes.write_text("this is not a fish")
        page.set_input_files("#file-input", str(notes))
        page.wait_for_selector("#error:not(.d-none)", timeout=30_000)
        assert "not an image" in page.inner_text("#error-message")
        assert not page.is_visible("#results")
        page.screenshot(path=str(TEST_OUTPUT / f"serving-page-{device}-error.png"), full_page=True)
    finally:
        page.close()
    assert console_errors == []
