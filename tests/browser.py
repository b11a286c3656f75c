"""A headless Chromium driven over the Chrome DevTools Protocol, for tests of HTML pages.

`open_page(url)` starts `chromium --headless=new` with a throw-away profile, attaches to its
tab over a websocket (websocket-client) and records every console message, uncaught exception
and network request while the page loads; `Page.evaluate` runs JavaScript in the page and
returns its value, `Page.screenshot` writes a PNG. Where no browser is installed a test skips,
except in CI (env CI=true), where it fails: CI installs Debian's chromium (.ci/run).
"""

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_browser() -> str:
    """The browser's path, or skip (fail in CI) when there is none."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    message = f"no headless browser found (tried {', '.join(CANDIDATES)}; apt-get install chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


class Page:
    def __init__(self, ws):
        self.ws, self.next_id = ws, 0
        self.console: list[dict] = []  # Runtime.consoleAPICalled params
        self.exceptions: list[dict] = []  # Runtime.exceptionThrown params
        self.log: list[dict] = []  # Log.entryAdded entries (failed loads, CSP, ...)
        self.requests: list[str] = []  # every URL the page asked for
        self.events: list[str] = []

    def send(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)

    def _event(self, msg: dict) -> None:
        method, params = msg.get("method"), msg.get("params", {})
        self.events.append(method)
        if method == "Runtime.consoleAPICalled":
            self.console.append(params)
        elif method == "Runtime.exceptionThrown":
            self.exceptions.append(params)
        elif method == "Log.entryAdded":
            self.log.append(params["entry"])
        elif method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])

    def wait_for(self, event: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while event not in self.events:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {event} within {timeout} s")
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            self._event(json.loads(self.ws.recv()))
        self.ws.settimeout(None)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression (awaited if it is a promise)."""
        result = self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def errors(self) -> list[str]:
        """Uncaught exceptions, console.error/warn calls and error-level log entries."""
        out = [e["exceptionDetails"].get("text", "exception") for e in self.exceptions]
        out += [
            " ".join(str(a.get("value", a.get("description", ""))) for a in c["args"])
            for c in self.console
            if c["type"] in ("error", "warning", "assert")
        ]
        out += [e["text"] for e in self.log if e["level"] in ("error", "warning")]
        return out

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=False)
        path.write_bytes(base64.b64decode(data["data"]))


@contextmanager
def open_page(url: str, width: int = 1400, height: int = 1000):
    """A `Page` with `url` loaded (its load event fired) in a fresh headless browser."""
    import websocket  # websocket-client, a test requirement

    browser = find_browser()
    with _profile() as profile:
        args = [
            browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--no-default-browser-check", "--disable-extensions", "--mute-audio",
            "--remote-debugging-port=0", "--remote-allow-origins=*",
            f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank",
        ]  # fmt: skip
        proc = subprocess.Popen(  # its own process group: every helper it starts ends with it
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 60
            while not (port_file.exists() and port_file.read_text().strip()):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{browser} did not start (exit status {proc.poll()})")
                time.sleep(0.05)
            port = int(port_file.read_text().split()[0])
            tabs = []
            while not tabs:  # on a loaded machine the first tab can appear after the port
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as r:
                    tabs = [t for t in json.load(r) if t["type"] == "page"]
                if not tabs and time.monotonic() > deadline:
                    raise RuntimeError(f"{browser} opened no page within 60 s of starting")
                time.sleep(0 if tabs else 0.05)
            ws = websocket.create_connection(tabs[0]["webSocketDebuggerUrl"], timeout=30)
            try:
                page = Page(ws)
                for domain in ("Page", "Runtime", "Log", "Network"):
                    page.send(f"{domain}.enable")
                page.send("Page.navigate", url=url)
                page.wait_for("Page.loadEventFired")
                yield page
            finally:
                ws.close()
        finally:
            _end_group(proc)


def _end_group(proc: subprocess.Popen) -> None:
    """Stop the browser and every process of its group (renderers, crash handler, ...): they
    can outlive the main process and still write into the profile being removed."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break  # the whole group is gone
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


@contextmanager
def _profile():
    """A temporary browser profile folder, removed afterwards (again while something that was
    still closing adds a file: `Directory not empty` failed a CI run once)."""
    path = tempfile.mkdtemp(prefix="diffatr-browser-")
    try:
        yield path
    finally:
        for attempt in range(20):
            try:
                shutil.rmtree(path)
                break
            except FileNotFoundError:
                break
            except OSError:
                if attempt == 19:
                    raise
                time.sleep(0.1)
