"""The bearer check of the command fast path: AUTH_TOKENS looked up by digest (the same
principals as comparing every entry), rebuilt for other settings; store credentials read on
every request (a revoked one fails on the next), and the role and command limit in one gate."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from services.api.auth import require, shortcut_principal, shortcuts_of
from services.api.errors import install
from services.api.limits import CommandLimit
from services.credentials import Principal
from services.settings import Settings


def settings(tmp_path: Path, tokens: str) -> Settings:
    return Settings.from_env(
        {"VAR_DIR": str(tmp_path), "PSEUDONYM_SECRET": "s", "AUTH_TOKENS": tokens}
    )


def test_the_table_admits_exactly_the_configured_tokens_as_before(tmp_path: Path) -> None:
    chosen = settings(tmp_path, "station=tok-station,viewer=tok-viewer")
    table = shortcuts_of(chosen)
    for token in ("tok-station", "tok-viewer"):
        assert table.principal(token) == shortcut_principal(token, chosen)
        assert table.principal(token) is not None
    for other in ("", "tok-", "tok-station ", "TOK-STATION", "tok-viewerx", "station"):
        assert table.principal(other) is None
        assert shortcut_principal(other, chosen) is None


def test_other_settings_get_their_own_table(tmp_path: Path) -> None:
    before = settings(tmp_path, "station=tok-a")
    assert shortcuts_of(before).principal("tok-a") is not None
    after = dataclasses.replace(before, auth_tokens={"tok-b": "viewer"})
    assert shortcuts_of(after).principal("tok-a") is None  # dropped from the settings: refused
    assert shortcuts_of(after).principal("tok-b") == Principal(
        shortcut_principal("tok-b", after).id,  # type: ignore[union-attr]
        "viewer",
    )
    assert shortcuts_of(before).principal("tok-b") is None


class Store:
    """A credential store of one token whose every lookup is counted; revocable."""

    def __init__(self) -> None:
        self.live = {"cred-1": Principal("dev-1", "station", kind="device")}
        self.lookups = 0
        self.leases = 0

    def lookup(self, token: str) -> Principal | None:
        self.lookups += 1
        return self.live.get(token)

    def lease(self, principal_id: str, rate: float, burst: int, lot: int) -> tuple[int, float]:
        self.leases += 1
        return (1, 0.0) if self.leases <= 2 else (0, 5.0)


def app_of(tmp_path: Path, store: Store) -> FastAPI:
    app = FastAPI()
    install(app)
    app.state.settings = settings(tmp_path, "viewer=tok-viewer")
    limit: Any = CommandLimit(store, 1.0, 1)  # type: ignore[arg-type]
    app.state.backbone = SimpleNamespace(credentials=store, command_limit=limit)

    @app.post("/command", dependencies=[Depends(require("station", limited=True))])
    async def command() -> dict[str, str]:
        return {"ok": "yes"}

    return app


def test_a_revoked_store_credential_fails_on_the_next_request(tmp_path: Path) -> None:
    store = Store()
    with TestClient(app_of(tmp_path, store)) as client:
        ok = client.post("/command", headers={"Authorization": "Bearer cred-1"})
        assert ok.status_code == 200
        del store.live["cred-1"]  # revoked in the store
        refused = client.post("/command", headers={"Authorization": "Bearer cred-1"})
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthenticated"
        assert store.lookups == 2  # read on every request


def test_the_gate_checks_the_role_then_spends_a_command_token(tmp_path: Path) -> None:
    store = Store()
    with TestClient(app_of(tmp_path, store)) as client:
        assert client.post("/command").status_code == 401
        wrong = client.post("/command", headers={"Authorization": "Bearer tok-viewer"})
        assert (wrong.status_code, wrong.json()["error"]["code"]) == (403, "forbidden")
        assert store.leases == 0  # refused before the limit counts anything
        headers = {"Authorization": "Bearer cred-1"}
        assert [client.post("/command", headers=headers).status_code for _ in range(2)] == [
            200,
            200,
        ]
        limited = client.post("/command", headers=headers)
        assert (limited.status_code, limited.headers["Retry-After"]) == (429, "5")
        assert limited.json()["error"]["code"] == "rate_limited"
