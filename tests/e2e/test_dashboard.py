"""The dashboard in a real headless Chromium: it updates live, without a reload, from the API.

Chromium is Debian's package (`infra/chromium.sh`), driven over the DevTools protocol on a pipe
(`--remote-debugging-pipe`: fd 3 in, fd 4 out, NUL-separated JSON), so no browser download and
no Python dependency beyond the standard library.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, TOKENS, wait_until
from tests.e2e.conftest import Api, running_api
from tests.factories import VN, personal_number, registration_body

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1366,900", "--remote-debugging-pipe",
]  # fmt: skip
SCREENSHOT = ROOT / "var" / "dashboard.png"
# Until create_app installs the dashboard itself, serve the app with it installed here.


class DevToolsError(RuntimeError):
    pass


class Chromium:
    """One headless Chromium process and one page, spoken to over the DevTools pipe."""

    def __init__(self, profile: Path, log: Path) -> None:
        to_browser, self._out = os.pipe()
        self._in, from_browser = os.pipe()
        # above 4, so that placing them on fds 3 and 4 in the child cannot clobber each other
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser, from_browser)]

        def on_fds_3_and_4() -> None:
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self._log = log.open("w")
        self.process = subprocess.Popen(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
            preexec_fn=on_fds_3_and_4, pass_fds=(3, 4),
        )  # fmt: skip
        for fd in (to_browser, from_browser, *high):
            os.close(fd)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session = ""

    def call(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self.session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline - time.monotonic(), method)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise DevToolsError(f"{method}: {reply['error']}")
                return reply.get("result", {})  # type: ignore[no-any-return]
            if "method" in reply:
                self.events.append(reply)

    def _receive(self, timeout: float, waiting_for: str) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._in], [], [], max(timeout, 0))
            chunk = os.read(self._in, 1 << 20) if ready else b""
            if not chunk:
                raise DevToolsError(f"no answer from chromium to {waiting_for}")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(raw)  # type: ignore[no-any-return]

    def open(self, url: str) -> None:
        """A new page, with what it requests and what goes wrong in it recorded as events."""
        self.events.clear()
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.call(f"{domain}.enable")
        self.call("Page.navigate", url=url)
        loaded = "location.protocol.startsWith('http') && document.readyState === 'complete'"
        wait_until(lambda: self.evaluate(loaded), 20)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise DevToolsError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path, width: int = 1366) -> None:
        """The whole page, however long, at `width` CSS pixels."""
        height = int(self.evaluate("document.documentElement.scrollHeight"))
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)  # fmt: skip
        shot = self.call("Page.captureScreenshot", format="png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    def problems(self) -> list[str]:
        """Uncaught exceptions and console or browser errors (a CSP refusal among them)."""
        self.call("Runtime.evaluate", expression="0")  # collect what arrived meanwhile
        found = []
        for event in self.events:
            if event["method"] == "Runtime.exceptionThrown":
                found.append(str(event["params"]["exceptionDetails"]))
            elif event["method"] == "Log.entryAdded":
                entry = event["params"]["entry"]
                if entry["level"] == "error":
                    found.append(str(entry))
        return found

    def requested_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events
                if e["method"] == "Network.requestWillBeSent"]  # fmt: skip

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        os.close(self._out)
        os.close(self._in)
        self._log.close()


@pytest.fixture(scope="module")
def api(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(kafka_bootstrap, tmp_path_factory.mktemp("dashboard")) as client:
        yield client


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run infra/chromium.sh (installs Debian's chromium)")
    base = tmp_path_factory.mktemp("chromium")
    chromium = Chromium(base / "profile", base / "chromium.log")
    try:
        yield chromium
    finally:
        chromium.close()


def seed(api: Api, commune: str, hours_ago: list[int], activate: int = 0) -> None:
    """Registrations captured `hours_ago`, the first `activate` of them approved and activated."""
    now = datetime.now(VN)
    for i, ago in enumerate(hours_ago):
        at = now - timedelta(hours=ago, minutes=5)
        body = registration_body(commune_code=commune, captured_at=at.isoformat(),
                                 citizen_id=personal_number())  # fmt: skip
        assert api.call("POST", "/v1/registrations", json=body).status_code == 201
        if i < activate:
            cid, later = body["citizen_id"], (now - timedelta(minutes=1)).isoformat()
            decision = {"command_id": f"dec-{uuid.uuid4()}", "decision": "approved",
                        "decided_at": later}  # fmt: skip
            assert api.call("POST", f"/v1/registrations/{cid}/decision", json=decision).is_success
            activation = {"command_id": f"act-{uuid.uuid4()}", "citizen_id": cid,
                          "method": "vneid_app", "activated_at": later}  # fmt: skip
            assert api.call("POST", "/v1/activations", json=activation).is_success


def set_target(api: Api, commune: str, metric: str, target: int) -> None:
    body = {"command_id": f"tgt-{uuid.uuid4()}", "metric": metric, "target": target,
            "deadline": "2023-06-30"}  # fmt: skip
    response = api.call("PUT", f"/v1/targets/{commune}", role="admin", json=body)
    assert response.status_code == 200, response.text


def row_value(browser: Chromium, commune: str, name: str) -> Any:
    return browser.evaluate(
        f"document.querySelector('[data-commune=\"{commune}\"]')?.dataset.{name} ?? null"
    )


def test_the_page_is_public_and_loads_nothing_from_elsewhere(api: Api) -> None:
    page = api.http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "http" not in page.text  # no external script, style, font or image
    assert api.http.get("/static/dashboard.js").status_code == 200
    assert "/" not in api.http.get("/openapi.json").json()["paths"]


def test_the_dashboard_shows_a_new_registration_live_without_a_reload(
    api: Api, browser: Chromium
) -> None:
    # arrange: Phường Cam Ranh with a day of intake and targets, two more communes beside it
    targets = {"22420": (47, 30), "22453": (12, 8), "22528": (9, 6)}
    for commune, (received, activated) in targets.items():
        set_target(api, commune, "received", received)
        set_target(api, commune, "activated", activated)
    seed(api, "22420", [0, 0, 1, 1, 1, 2, 4, 5, 5, 7, 9, 12, 20], activate=5)
    seed(api, "22453", [0, 2, 3, 3, 8, 16], activate=2)
    wait_until(lambda: api.received("22420") == 13 and api.received("22453") == 6, 60)
    browser.open(f"{api.base}/#token={TOKENS['viewer']}")
    wait_until(lambda: row_value(browser, "22420", "received") == "13", 30)
    wait_until(lambda: browser.evaluate("document.getElementById('live').dataset.live")
               == "connected", 20)  # fmt: skip
    loaded_at = browser.evaluate("window.__loadedAt")
    browser.evaluate("window.__sameDocument = true")

    # act: one more registration, through the API, while the page stays open
    assert api.call("POST", "/v1/registrations", json=registration_body()).status_code == 201

    # assert: the count moves on the open page; the page was not reloaded
    wait_until(lambda: row_value(browser, "22420", "received") == "14", 20)
    assert browser.evaluate("window.__loadedAt") == loaded_at
    assert browser.evaluate("window.__sameDocument") is True
    assert row_value(browser, "22420", "receivedTarget") == "47"
    assert browser.evaluate("location.hash") == ""  # the token does not stay in the address bar
    chart_total = "document.querySelector('[data-commune=\"22420\"] .chart').dataset.total"
    wait_until(lambda: browser.evaluate(chart_total) == "14", 10)
    browser.screenshot(SCREENSHOT)
    assert SCREENSHOT.stat().st_size > 10_000
    assert browser.problems() == []
    origins = {url.split("/")[2] for url in browser.requested_urls() if url.startswith("http")}
    assert origins == {api.base.split("/")[2]}


def test_a_wrong_token_is_refused_on_the_page_and_the_form_is_shown(
    api: Api, browser: Chromium
) -> None:
    browser.open(f"{api.base}/#token=not-a-token&province=56")

    def told() -> object:
        return browser.evaluate("document.getElementById('message').hidden === false"
                                " && !document.getElementById('settings').hidden"
                                " && document.getElementById('message').textContent")  # fmt: skip

    assert "Invalid token" in str(wait_until(told, 20))
    assert browser.evaluate("document.querySelectorAll('[data-commune]').length") == 0
