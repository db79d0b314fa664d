"""The credentials tool: add, list, revoke and rotate principals; tokens shown once, never kept."""

from __future__ import annotations

import pytest

from services.credentials import CredentialStore, Principal, token_hash
from services.credentials.__main__ import main


@pytest.fixture
def store(tmp_path, monkeypatch) -> CredentialStore:
    monkeypatch.setenv("VAR_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("CREDENTIALS_STORE", raising=False)
    return CredentialStore(tmp_path / "var" / "credentials.sqlite")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_add_prints_a_token_once_that_authenticates_the_scoped_principal(store, capsys) -> None:
    scope = ["--station", "st-cam-ranh", "--communes", "22420,22423", "--province", "56"]
    code, out = run(capsys, "add", "dev-cr-1", "--role", "station", "--kind", "device", *scope)
    assert code == 0
    token = out.strip().split(": ", 1)[1]
    assert len(token) >= 32  # 192 random bits, URL-safe base64
    assert store.lookup(token) == Principal(
        "dev-cr-1", "station", "device", "st-cam-ranh", ("22420", "22423"), "56"
    )


def test_list_shows_principals_and_scopes_but_never_a_token_or_its_hash(store, capsys) -> None:
    _, out = run(capsys, "add", "rv-nga", "--role", "reviewer", "--province", "56")
    token = out.strip().split(": ", 1)[1]
    run(capsys, "revoke", "rv-nga")
    code, listing = run(capsys, "list")
    assert code == 0
    assert "rv-nga\treviewer" in listing and "province=56" in listing
    assert "revoked=-" not in listing  # the revocation time is shown
    assert token not in listing and token_hash(token) not in listing


def test_revoke_and_rotate_take_effect_at_once(store, capsys) -> None:
    _, out = run(capsys, "add", "of-tuan", "--role", "officer")
    old = out.strip().split(": ", 1)[1]
    _, out = run(capsys, "rotate", "of-tuan")
    new = out.strip().split(": ", 1)[1]
    assert store.lookup(old) is None and store.lookup(new) is not None
    assert run(capsys, "revoke", "of-tuan")[0] == 0
    assert store.lookup(new) is None
    assert run(capsys, "revoke", "of-tuan")[0] == 1  # nothing live left to revoke
    assert run(capsys, "rotate", "of-tuan")[0] == 1


def test_the_tool_refuses_unknown_roles_a_station_without_station_and_duplicates(
    store, capsys
) -> None:
    with pytest.raises(SystemExit):
        main(["add", "x", "--role", "clerk"])
    assert run(capsys, "add", "dev-1", "--role", "station")[0] == 1
    assert run(capsys, "add", "vi-room", "--role", "viewer")[0] == 0
    code, out = run(capsys, "add", "vi-room", "--role", "viewer")
    assert code == 1 and "exists" in out
