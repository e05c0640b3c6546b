"""A headless Chromium driven through chromedriver's W3C WebDriver HTTP API, with ``requests`` only.

Debian's ``chromium`` and ``chromium-driver`` packages (scripts/bootstrap.sh installs them as root).
Only what the status-page test needs: open a URL, find elements by CSS selector, type, click, read
text and attributes, take a screenshot. Each command is one JSON request to chromedriver, which
runs on a free loopback port for the length of a ``Browser`` context.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from sandbox.servers import free_port

#: The key under which WebDriver hands over an element reference.
ELEMENT_KEY = "element-6066-11e4-a52e-4f735466cecf"
#: Seconds chromedriver gets to start answering.
DRIVER_START_TIMEOUT = 20.0
#: Where Debian puts the two programs.
CHROMIUM, CHROMEDRIVER = "chromium", "chromedriver"


def missing_programs() -> list[str]:
    """The programs of the two Debian packages not found on PATH."""
    return [name for name in (CHROMIUM, CHROMEDRIVER) if shutil.which(name) is None]


class WebDriverError(AssertionError):
    """chromedriver answered a command with an error."""


class Element:
    """An element of the current page."""

    def __init__(self, browser: Browser, element_id: str) -> None:
        self.browser = browser
        self.id = element_id

    def _path(self, tail: str) -> str:
        return f"/element/{self.id}/{tail}"

    @property
    def text(self) -> str:
        return str(self.browser.command("GET", self._path("text")))

    def attribute(self, name: str) -> str | None:
        value = self.browser.command("GET", self._path(f"attribute/{name}"))
        return None if value is None else str(value)

    def type(self, text: str) -> None:
        self.browser.command("POST", self._path("value"), {"text": text})

    def click(self) -> None:
        self.browser.command("POST", self._path("click"), {})

    def screenshot(self, path: Path) -> Path:
        """Saves a PNG of this element alone (scrolled into view) to ``path``; returns ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.browser.command("GET", self._path("screenshot"))))
        return path


class Browser:
    """A headless Chromium session (``with Browser(...) as browser``): window ``width`` x ``height`` px."""

    def __init__(self, *, width: int = 1440, height: int = 2200) -> None:
        self.width, self.height = width, height
        self.port = free_port()
        self.driver: subprocess.Popen[bytes] | None = None
        self.session = ""

    def __enter__(self) -> Browser:
        self.driver = subprocess.Popen([shutil.which(CHROMEDRIVER) or CHROMEDRIVER, f"--port={self.port}"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + DRIVER_START_TIMEOUT
        while True:
            try:
                if requests.get(f"{self.base}/status", timeout=2).json()["value"]["ready"]:
                    break
            except (requests.RequestException, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                self._stop_driver()
                raise WebDriverError(f"chromedriver did not answer on port {self.port}")
            time.sleep(0.1)
        options = {"binary": shutil.which(CHROMIUM), "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--lang=en-GB",
            f"--window-size={self.width},{self.height}", "--force-device-scale-factor=1"]}
        answer = requests.post(f"{self.base}/session", json={"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": options}}}, timeout=60).json()
        if "sessionId" not in answer.get("value", {}):
            self._stop_driver()
            raise WebDriverError(f"no browser session: {answer}")
        self.session = answer["value"]["sessionId"]
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.session:
            try:
                requests.delete(f"{self.base}/session/{self.session}", timeout=30)
            except requests.RequestException:
                pass
        self._stop_driver()

    def _stop_driver(self) -> None:
        if self.driver is not None:
            self.driver.terminate()
            try:
                self.driver.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.driver.kill()
                self.driver.wait()
            self.driver = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Sends one WebDriver command of the session; its ``value``, or WebDriverError."""
        answer = requests.request(method, f"{self.base}/session/{self.session}{path}", json=body, timeout=60)
        value = answer.json().get("value")
        if answer.status_code != 200:
            raise WebDriverError(f"{method} {path}: {answer.status_code} {value}")
        return value

    def get(self, url: str) -> None:
        self.command("POST", "/url", {"url": url})

    @property
    def url(self) -> str:
        return str(self.command("GET", "/url"))

    @property
    def title(self) -> str:
        return str(self.command("GET", "/title"))

    def find(self, css: str) -> Element:
        value = self.command("POST", "/element", {"using": "css selector", "value": css})
        return Element(self, value[ELEMENT_KEY])

    def find_all(self, css: str) -> list[Element]:
        values = self.command("POST", "/elements", {"using": "css selector", "value": css})
        return [Element(self, value[ELEMENT_KEY]) for value in values]

    def wait_until(self, what: str, ready: Callable[[], bool], *, timeout: float = 15.0) -> None:
        """Waits for ``ready()`` (a click's navigation may still be loading when the click returns);
        WebDriverError naming ``what`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise WebDriverError(f"timed out after {timeout:.0f} s waiting for {what} (at {self.url})")
            time.sleep(0.05)

    def screenshot(self, path: Path) -> Path:
        """Saves a PNG of the window to ``path`` (its folder made if needed); returns ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.command("GET", "/screenshot")))
        return path
