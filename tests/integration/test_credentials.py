"""The credentials tool: add, list, revoke and rotate principals; tokens shown once, never kept.
On both stores: the SQLite file, or the PostgreSQL table beside the event store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services import pg
from services.credentials import (
    CredentialStore,
    PostgresCredentialStore,
    Principal,
    SqliteCredentialStore,
    open_credential_store,
    token_hash,
)
from services.credentials.__main__ import main
from services.settings import Settings


@pytest.fixture
def creds(env_for, monkeypatch) -> Iterator[CredentialStore]:
    """The deployment's credential store, and its settings in the environment the tool reads."""
    env = env_for()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CREDENTIALS_STORE", raising=False)
    store = open_credential_store(Settings.from_env(env))
    yield store
    store.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_add_prints_a_token_once_that_authenticates_the_scoped_principal(creds, capsys) -> None:
    scope = ["--station", "st-cam-ranh", "--communes", "22420,22423", "--province", "56"]
    code, out = run(capsys, "add", "dev-cr-1", "--role", "station", "--kind", "device", *scope)
    assert code == 0
    token = out.strip().split(": ", 1)[1]
    assert len(token) >= 32  # 192 random bits, URL-safe base64
    assert creds.lookup(token) == Principal(
        "dev-cr-1", "station", "device", "st-cam-ranh", ("22420", "22423"), "56"
    )


def test_list_shows_principals_and_scopes_but_never_a_token_or_its_hash(creds, capsys) -> None:
    _, out = run(capsys, "add", "rv-nga", "--role", "reviewer", "--province", "56")
    token = out.strip().split(": ", 1)[1]
    run(capsys, "revoke", "rv-nga")
    code, listing = run(capsys, "list")
    assert code == 0
    assert "rv-nga\treviewer" in listing and "province=56" in listing
    assert "revoked=-" not in listing  # the revocation time is shown
    assert token not in listing and token_hash(token) not in listing


def test_revoke_and_rotate_take_effect_at_once(creds, capsys) -> None:
    _, out = run(capsys, "add", "of-tuan", "--role", "officer")
    old = out.strip().split(": ", 1)[1]
    _, out = run(capsys, "rotate", "of-tuan")
    new = out.strip().split(": ", 1)[1]
    assert creds.lookup(old) is None and creds.lookup(new) is not None
    assert run(capsys, "revoke", "of-tuan")[0] == 0
    assert creds.lookup(new) is None
    assert run(capsys, "revoke", "of-tuan")[0] == 1  # nothing live left to revoke
    assert run(capsys, "rotate", "of-tuan")[0] == 1


def test_the_tool_refuses_unknown_roles_a_station_without_station_and_duplicates(
    creds, capsys
) -> None:
    with pytest.raises(SystemExit):
        main(["add", "x", "--role", "clerk"])
    assert run(capsys, "add", "dev-1", "--role", "station")[0] == 1
    assert run(capsys, "add", "vi-room", "--role", "viewer")[0] == 0
    code, out = run(capsys, "add", "vi-room", "--role", "viewer")
    assert code == 1 and "exists" in out


def test_the_store_follows_the_event_store(creds, store) -> None:
    """With EVENT_STORE=postgres the principals are a table in the event store's schema, and no
    credentials file is made; with SQLite, the file CREDENTIALS_STORE."""
    settings = Settings.from_env()
    creds.add(Principal("au-lan", "auditor"))
    if store == "postgres":
        assert isinstance(creds, PostgresCredentialStore)
        with pg.connect(settings) as conn:
            table = f"{settings.postgres_schema}.principals"
            row = conn.execute(f"SELECT id, role FROM {table}").fetchone()
        assert row == ("au-lan", "auditor")
        assert not settings.credentials_store.exists()
    else:
        assert isinstance(creds, SqliteCredentialStore)
        assert settings.credentials_store.exists()
