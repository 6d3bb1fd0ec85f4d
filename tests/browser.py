"""Real-browser test helpers: Debian's Chromium driven by Playwright (never Playwright's own browser
download), Gradio pages served on 127.0.0.1, and what the tests read back from the page."""

from __future__ import annotations

import contextlib
import re
import socket
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# headless, and nothing of Chromium's own traffic: on a closed network its background connections fail slowly
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).parent / "artifacts"
WAIT_MS = 60_000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def chromium_page():
    """A page in headless Chromium. A missing browser or Playwright fails the test: CI installs both."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is not installed: run `bash dev/setup.sh` (the `test` extra pins it)", pytrace=False)
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `bash dev/setup.sh`, which installs Debian's chromium", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 1000})
            context.set_default_timeout(WAIT_MS)  # every page of the context, also ones a test opens
            yield context.new_page()
        finally:
            browser.close()


def field(page, elem_id: str):
    """The text or number input inside a Gradio component."""
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first


def reveal(page, elem_id: str):
    """Opens every closed accordion around the element, as a user does before typing into it (Gradio 3 and 4
    hide a closed accordion's content, after its clickable label)."""
    page.evaluate("""id => {
        for (let node = document.getElementById(id); node; node = node.parentElement) {
            const label = node.previousElementSibling;
            if (node.style.display === 'none' && label && label.classList.contains('label-wrap')) label.click();
        }
    }""", elem_id)


def fill(page, values: dict[str, object]):
    """Types each value into its input (opening the accordions around it), presses and lets go of a key that
    changes nothing (a dropdown that takes typed values takes them on key-up) and leaves the input (a slider's
    number box hands its value to the slider then)."""
    for elem_id, value in values.items():
        reveal(page, elem_id)
        box = field(page, elem_id)
        box.fill(str(value))
        box.press("End")
        box.blur()


def choose(page, elem_id: str, option: str, refresh_id: str, tries: int = 30):
    """Picks an option of a Gradio dropdown the way a user does: press its refresh button, open the list,
    click the option. Gradio 3.41 drops a choices update that lands while the list is open, so each try
    presses refresh again and waits a little longer before opening the list."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    item = page.locator(f"#{elem_id} li", has_text=option).first
    for attempt in range(tries):
        page.click(f"#{refresh_id}")
        page.wait_for_timeout(100 * (attempt + 1))
        field(page, elem_id).click()
        try:
            item.click(timeout=500)
            return
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    raise AssertionError(f"{option!r} never appeared in the dropdown #{elem_id}")


def open_tab(page, label: str):
    page.get_by_role("tab", name=label).or_(page.locator("button", has_text=label)).first.click()


def wait_for_text(page, elem_id: str, text: str):
    """Waits until the element shows ``text`` (case-sensitive: "Nothing was created:" is not "Created:")."""
    page.locator(f"#{elem_id}", has_text=re.compile(re.escape(text))).first.wait_for()


def record_html(page, elem_id: str):
    """From now on, every content the element shows is kept in the page (read with ``recorded_html``)."""
    page.evaluate("""id => {
        const target = document.getElementById(id);
        window.__hnext_seen = window.__hnext_seen || {};
        const seen = window.__hnext_seen[id] = [];
        new MutationObserver(() => {
            if (seen[seen.length - 1] !== target.innerHTML) seen.push(target.innerHTML);
        }).observe(target, {childList: true, subtree: true, characterData: true, attributes: true});
    }""", elem_id)


def recorded_html(page, elem_id: str) -> list[str]:
    return page.evaluate("id => window.__hnext_seen[id]", elem_id)


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
