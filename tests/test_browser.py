"""The search page end to end in headless Chromium, against a real ``rshash serve`` process.

Drives Debian's ``chromium`` through ``chromedriver`` with the plain W3C WebDriver protocol
over httpx (already a test dependency), so no browser-automation package is needed:
a dropped file and a file picked in the file input show result thumbnails, a bad upload
shows an error, clicking a result
searches by its id, the class filter narrows the results. Ends with a screenshot in
``/tmp/rshash_page.png``. Skipped when chromium / chromedriver are not installed
(``apt-get install chromium chromium-driver``).
"""

from __future__ import annotations

import base64
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from rshash.data.synthetic import make_synthetic_dataset
from rshash.index import Index

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
CHROMEDRIVER = shutil.which("chromedriver")
SCREENSHOT = Path("/tmp/rshash_page.png")
K = 6

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="headless Chromium not installed (apt-get install chromium chromium-driver)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A child process whose output is collected in the background."""

    def __init__(self, args: list[str]):
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self._reader.start()

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if m := re.search(pattern, line):
                    return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"no {pattern!r} in the output of {self.proc.args[:4]}:\n{self.output}")

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class WebDriver:
    """Just enough of the W3C WebDriver protocol to drive a page."""

    ELEMENT = "element-6066-11e4-a52e-4f735466cecf"

    def __init__(self, driver_url: str, profile: Path):
        self.http = httpx.Client(base_url=driver_url, timeout=120)
        args = [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--window-size=1280,1000", f"--user-data-dir={profile}",
        ]
        caps = {"browserName": "chrome", "goog:chromeOptions": {"binary": CHROMIUM, "args": args}}
        session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})
        self.session = f"/session/{session['sessionId']}"

    def _call(self, method: str, path: str, payload: dict | None = None):
        r = self.http.request(method, path, json=payload)
        value = r.json().get("value")
        if r.status_code != 200:
            raise RuntimeError(f"WebDriver {method} {path}: {r.status_code} {value}")
        return value

    def call(self, method: str, path: str, payload: dict | None = None):
        return self._call(method, self.session + path, payload)

    def open(self, url: str) -> None:
        self.call("POST", "/url", {"url": url})

    def find(self, css: str) -> str:
        return self.call("POST", "/element", {"using": "css selector", "value": css})[self.ELEMENT]

    def click(self, css: str) -> None:
        self.call("POST", f"/element/{self.find(css)}/click", {})

    def send_file(self, css: str, path: Path) -> None:
        self.call("POST", f"/element/{self.find(css)}/value", {"text": str(path)})

    def js(self, script: str, *args):
        return self.call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def js_async(self, script: str, *args):
        """Run a script whose last argument is the callback that finishes it."""
        return self.call("POST", "/execute/async", {"script": script, "args": list(args)})

    def wait(self, script: str, what: str, timeout: float = 30):
        """Poll a JS expression (``return ...``) until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(script)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; page state: {self.state()}")

    def state(self) -> dict:
        return self.js(
            "return {status: document.getElementById('status').textContent,"
            " error: document.getElementById('error').hidden ? null : document.getElementById('error').textContent,"
            " query: document.getElementById('results').dataset.query,"
            " cards: document.querySelectorAll('#results .card').length}"
        )

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("GET", "/screenshot")))

    def quit(self) -> None:
        try:
            self._call("DELETE", self.session)
        finally:
            self.http.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``rshash serve`` on a free loopback port over a 3-class synthetic index."""
    from rshash.model import HashingModel, ModelConfig
    from rshash.model_dir import save_model_dir

    root = tmp_path_factory.mktemp("browser")
    save_model_dir(root / "model", HashingModel(ModelConfig(bits=32, class_names=["agricultural", "water", "roads"])))
    make_synthetic_dataset(root / "images", classes=3, per_class=4, size=96)
    with Index.create(root / "index", root / "model") as index:
        index.add_paths(root / "images", progress=False)
    proc = Process([sys.executable, "-m", "rshash.cli", "serve", "--index", str(root / "index"), "--port", "0"])
    try:
        url = proc.wait_for(r"at (http://127\.0\.0\.1:\d+)/")[1]
        proc.wait_for(r"Application startup complete")
        yield url, root
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    port = free_port()
    driver = Process([CHROMEDRIVER, f"--port={port}", "--allowed-ips=127.0.0.1"])
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/status", timeout=2).json()["value"]["ready"]:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or driver.proc.poll() is not None:
                raise AssertionError(f"chromedriver did not start:\n{driver.output}")
            time.sleep(0.2)
        web = WebDriver(url, tmp_path_factory.mktemp("chromium-profile"))
        try:
            yield web
        finally:
            web.quit()
    finally:
        driver.stop()


CARDS = "return Array.from(document.querySelectorAll('#results .card'))"
THUMBNAILS_LOADED = (
    f"{CARDS}.every(c => {{ const i = c.querySelector('img'); return i.complete && i.naturalWidth > 0; }})"
    " && document.querySelectorAll('#results .card').length > 0"
)


def test_search_page_upload_click_filter(server, browser, tmp_path):
    url, root = server
    web = browser
    web.open(url + "/")
    web.wait("return document.getElementById('stats').textContent.includes('12 images')", "the index stats")
    assert web.js("return document.querySelectorAll('#class-filter option').length") == 4  # all + 3 classes
    web.js("const k = document.getElementById('k'); k.value = arguments[0];", K)

    # drag and drop a file onto the drop zone (a real File in a DataTransfer, as a desktop drag makes)
    dropped = web.js_async(
        "const done = arguments[arguments.length - 1];"
        "fetch('/api/images/1').then(r => r.blob()).then(blob => {"
        "  const dt = new DataTransfer(); dt.items.add(new File([blob], 'dropped.png', {type: blob.type}));"
        "  const zone = document.getElementById('drop-zone');"
        "  zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: dt, bubbles: true, cancelable: true}));"
        "  zone.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));"
        "  done(blob.size); }).catch(e => done('error: ' + e));"
    )
    assert isinstance(dropped, int) and dropped > 0, dropped
    web.wait("return document.getElementById('results').dataset.query === 'upload:dropped.png'", "drop results")
    web.wait(THUMBNAILS_LOADED, "thumbnails of the dropped image's results")
    assert web.js(f"{CARDS}[0].querySelector('.dist').textContent") == "d = 0"  # image 1 finds itself first

    # a file that is not an image: a clear error, no results
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    web.send_file("#file-input", bad)
    error = web.wait("const e = document.getElementById('error'); return !e.hidden && e.textContent", "the error")
    assert "not an image" in error
    web.wait("return document.getElementById('results').dataset.query === 'error:upload:notes.txt'", "the error state")
    assert web.js("return document.querySelectorAll('#results .card').length") == 0  # the old results are gone

    # upload a query image through the file input: thumbnails with distances and labels appear
    query = root / "images" / "water" / "water_002.png"
    web.send_file("#file-input", query)
    web.wait("return document.getElementById('results').dataset.query === 'upload:water_002.png'", "upload results")
    web.wait(THUMBNAILS_LOADED, "thumbnails of the upload's results")
    assert web.js("return document.getElementById('error').hidden") is True
    cards = web.js(
        f"{CARDS}.map(c => ({{id: +c.dataset.id, dist: c.querySelector('.dist').textContent,"
        " label: c.querySelector('.label').textContent, path: c.querySelector('.path').textContent}))"
    )
    assert len(cards) == K
    assert cards[0]["dist"] == "d = 0" and cards[0]["path"] == "water/water_002.png"  # itself, first
    assert all(re.fullmatch(r"d = \d+", c["dist"]) for c in cards)
    assert re.search(r"^6 results in [\d.]+ ms$", web.state()["status"])

    # click the second result: a search by its id, which excludes it from its own results
    clicked = cards[1]["id"]
    web.click("#results li:nth-child(2) .card")
    web.wait(f"return document.getElementById('results').dataset.query === 'id:{clicked}'", "the search by id")
    web.wait(THUMBNAILS_LOADED, "thumbnails of the id search")
    ids = web.js(f"{CARDS}.map(c => +c.dataset.id)")
    assert len(ids) == K and clicked not in ids
    assert f"Image #{clicked}" in web.js("return document.getElementById('query-info').textContent")
    expected = httpx.get(f"{url}/api/search", params={"id": clicked, "k": K}).json()["results"]
    assert ids == [r["id"] for r in expected]

    # the class filter (populated from /api/stats) narrows the same query to one class
    roads = httpx.get(f"{url}/api/search", params={"id": clicked, "k": K, "label": "roads"}).json()["results"]
    assert len(roads) >= 3
    web.click('#class-filter option[value="roads"]')
    web.wait(
        f"const c = {CARDS[len('return '):]}; return c.length === {len(roads)}"
        " && c.every(x => x.querySelector('.label').textContent === 'roads')",
        "results filtered to roads",
    )
    assert web.js(f"{CARDS}.map(c => +c.dataset.id)") == [r["id"] for r in roads]
    web.wait(THUMBNAILS_LOADED, "thumbnails of the filtered results")
    assert "(class roads)" in web.state()["status"]

    web.screenshot(SCREENSHOT)
    with Image.open(SCREENSHOT) as shot:
        assert shot.size[0] >= 1000
    assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
