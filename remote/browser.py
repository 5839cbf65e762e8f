"""A headless Chromium pointed at the browser client, with a WAV file as its microphone.

For the browser tests (``tests/test_web.py``) and the page's benchmark (``python -m remote.webbench``).
It drives Debian's ``chromium`` through ``chromium-driver`` with the ``selenium`` package (the
``dev`` extra), given both paths explicitly, so Selenium Manager never runs and nothing is
downloaded. Chromium's fake media devices make the WAV the microphone
(``--use-file-for-fake-audio-capture``, played once from the moment the page opens the microphone,
then silence), grant the permission without a prompt, and let audio start without a click. The
flags that keep Chromium off the network matter here: without them it waits on connections a
closed network never answers.

Install: ``apt-get install chromium chromium-driver`` (``scripts/setup.sh`` does it).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import S2SError

if TYPE_CHECKING:  # pragma: no cover
    from selenium.webdriver import Chrome

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
DRIVER_CANDIDATES = ("chromedriver",)
INSTALL_HINT = "install them with `apt-get install chromium chromium-driver` (scripts/setup.sh does)"


class BrowserError(S2SError):
    """Chromium, its driver or selenium is missing, or the page did not do what was awaited."""

    code = "browser_error"


def find_chromium() -> tuple[str, str]:
    """Paths of Chromium and its WebDriver (``$S2S_CHROMIUM`` / ``$S2S_CHROMEDRIVER`` override)."""
    browser = os.environ.get("S2S_CHROMIUM") or next(filter(None, map(shutil.which, CHROMIUM_CANDIDATES)), None)
    driver = os.environ.get("S2S_CHROMEDRIVER") or next(filter(None, map(shutil.which, DRIVER_CANDIDATES)), None)
    missing = [name for name, path in (("chromium", browser), ("chromium-driver", driver)) if not path]
    if missing:
        raise BrowserError(f"{' and '.join(missing)} not found: {INSTALL_HINT}")
    return str(browser), str(driver)


def chromium_flags(mic: Path | str | None, user_data_dir: Path, window: tuple[int, int]) -> list[str]:
    """The command-line flags: headless, offline, a fake microphone.

    ``mic``: a WAV file to be the microphone, ``"deny"`` to refuse the page the microphone (as a
    user who clicks "Block"), or None for Chromium's own test tone.
    """
    flags = [
        "--headless=new",
        "--no-sandbox",  # root in a container: the sandbox cannot start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--no-first-run",
        "--no-default-browser-check",
        "--metrics-recording-only",
        "--disable-features=Translate,OptimizationHints,MediaRouter",
        "--autoplay-policy=no-user-gesture-required",
        "--use-fake-ui-for-media-stream" + ("=deny" if mic == "deny" else ""),
        "--use-fake-device-for-media-stream",
        f"--user-data-dir={user_data_dir}",
        f"--window-size={window[0]},{window[1]}",
        "--lang=en-US",
    ]
    if mic is not None and mic != "deny":
        flags.append(f"--use-file-for-fake-audio-capture={mic}%noloop")
    return flags


class Browser:
    """One headless Chromium. ``with Browser(wav) as b: b.open(url); b.wait_for(...)``.

    ``mic`` as in :func:`chromium_flags`. ``driver`` is the Selenium WebDriver; :meth:`snapshot`
    returns the page's ``s2sTest.snapshot()``.
    """

    def __init__(self, mic: Path | str | None = None, window: tuple[int, int] = (1280, 860)):
        try:
            from selenium import webdriver
            from selenium.webdriver.chrome.service import Service
        except ImportError:
            raise BrowserError("the selenium package is missing: pip install the dev extra "
                               "(`pip install -e .[dev]`; scripts/setup.sh does)") from None
        browser, driver = find_chromium()
        self._tmp = tempfile.TemporaryDirectory(prefix="s2s-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for flag in chromium_flags(mic, Path(self._tmp.name), window):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        try:
            self.driver: Chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
        except Exception as exc:
            self._tmp.cleanup()
            raise BrowserError(f"Chromium did not start ({browser}, {driver}): {str(exc).splitlines()[0]}") from exc
        self.driver.set_script_timeout(30)

    def open(self, url: str) -> None:
        self.driver.get(url)

    def snapshot(self) -> dict[str, Any]:
        """The page's ``window.s2sTest.snapshot()`` (an empty dict before the page defines it)."""
        return self.driver.execute_script("return window.s2sTest ? window.s2sTest.snapshot() : {}") or {}

    def wait_for(self, what: str, check: Callable[[dict[str, Any]], Any], timeout_s: float = 60.0,
                 poll_s: float = 0.1) -> Any:
        """Poll the snapshot until ``check(snapshot)`` is truthy; returns that value.

        Raises :class:`BrowserError` naming ``what``, with the last snapshot, on timeout.
        """
        deadline = time.monotonic() + timeout_s
        snap: dict[str, Any] = {}
        while time.monotonic() < deadline:
            snap = self.snapshot()
            value = check(snap) if snap else None
            if value:
                return value
            time.sleep(poll_s)
        brief = {k: snap.get(k) for k in ("conn", "connReason", "state", "problem", "micOpen", "samplesPlayed",
                                          "transcripts", "eventCounts")}
        raise BrowserError(f"timed out after {timeout_s:g} s waiting for {what}; page: {brief}; "
                           f"console: {self.console()[-5:]}")

    def click(self, css: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver.find_element(By.CSS_SELECTOR, css).click()

    def press(self, key: str) -> None:
        """A key press on the page body (as a user would type it)."""
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(self.driver).send_keys(key).perform()

    def text(self, css: str) -> str:
        from selenium.webdriver.common.by import By

        return "\n".join(e.text for e in self.driver.find_elements(By.CSS_SELECTOR, css))

    def count(self, css: str) -> int:
        from selenium.webdriver.common.by import By

        return len(self.driver.find_elements(By.CSS_SELECTOR, css))

    def console(self) -> list[str]:
        """Console messages and page errors logged so far (and not read before)."""
        try:
            return [f"{e.get('level')}: {e.get('message')}" for e in self.driver.get_log("browser")]
        except Exception:  # noqa: BLE001 - a driver without logs: nothing to show
            return []

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))
        return path

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            self._tmp.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Browser", "BrowserError", "chromium_flags", "find_chromium"]
