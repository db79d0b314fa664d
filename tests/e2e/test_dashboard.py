"""The dashboard in a real headless Chromium: it updates live, without a reload, from the API."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.support.api import Api
from tests.support.chromium import CHROMIUM, Chromium
from tests.support.environment import TOKENS
from tests.support.factories import VN, personal_number, registration_body
from tests.support.processes import ROOT
from tests.support.waiting import wait_until

SCREENSHOT = ROOT / "var" / "dashboard.png"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory, api: Api) -> Iterator[Chromium]:
    """A browser per deployment (per event store): closed before its API stops, so the
    console never holds the errors of a feed cut by the previous deployment's end."""
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
            decision = {"command_id": f"dec-{uuid.uuid4()}", "citizen_id": cid,
                        "decision": "approved", "decided_at": later}  # fmt: skip
            assert api.call("POST", "/v1/decisions", json=decision).is_success
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
