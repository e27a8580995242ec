"""A real headless browser for tests: Debian's chromium through chromedriver (selenium), cut off from the network.

The browser starts with a fresh profile, with Chrome's own background traffic switched off, and with every host name
resolving to nothing (``--host-resolver-rules``), so a page that tried to load anything from the internet would fail
loudly in the console. The DevTools performance log records every request the page makes; `Page` reads it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--hide-scrollbars")


def available() -> str | None:
    """None when the browser can run here, else why not: the browser tests fail with it (never skip)."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        return f"{' and '.join(missing)} missing: apt-get install chromium chromium-driver (.ci/run does)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium missing: pip install -e '.[dev]'"
    return None


@dataclass
class Page:
    """A page loaded in the browser, with what happened while it loaded."""

    driver: object
    url: str
    requests: list[str]  # every URL the page requested, itself included, in order
    console: list[dict]  # the console's messages (level, message, source)


@contextlib.contextmanager
def open_page(path: Path, width: int = 1280, height: int = 900) -> Iterator[Page]:
    """``path`` opened from disk (``file://``) in a fresh headless chromium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="tada-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get("about:blank")
        driver.get_log("performance")  # drop what the browser did before the page (its start-up)
        driver.get_log("browser")
        url = path.resolve().as_uri()
        driver.get(url)  # returns once the page has loaded (document.readyState complete)
        requests = [event["params"]["request"]["url"] for event in
                    (json.loads(entry["message"])["message"] for entry in driver.get_log("performance"))
                    if event["method"] == "Network.requestWillBeSent"]
        yield Page(driver, url, requests, driver.get_log("browser"))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def numbers_shown(page: Page, attribute: str = "data-metric") -> dict[str, tuple[str, str, bool]]:
    """Every element carrying ``attribute``: its key -> (``data-value``, visible text, displayed)."""
    from selenium.webdriver.common.by import By

    shown = {}
    for element in page.driver.find_elements(By.CSS_SELECTOR, f"[{attribute}]"):
        key = element.get_attribute(attribute)
        assert key not in shown, f"{attribute}={key} appears twice"
        shown[key] = (element.get_attribute("data-value"), element.text, element.is_displayed())
    return shown


def assert_offline(page: Page) -> None:
    """The page loaded nothing but itself and ``data:`` URIs, and the console stayed silent (no error, no warning:
    a blocked request, a script error or a CSP violation would each say so there)."""
    outside = [url for url in page.requests if url != page.url and not url.startswith("data:")]
    assert not outside, f"requests outside the file: {outside}"
    resources = page.driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(name.startswith("data:") for name in resources), resources
    assert page.console == [], page.console
    broken = page.driver.execute_script(
        "return [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt)")
    assert broken == [], f"images that did not decode: {broken}"


def screenshot(page: Page, path: Path, width: int, height: int) -> None:
    """The page's top ``width`` x ``height`` CSS pixels (the viewport set exactly, whatever the window's frame) as
    PNG."""
    page.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    page.driver.save_screenshot(str(path))
