"""What only the PostgreSQL store has: tables made by processes that start together, and a
destroyed data key pruned from the table's pages."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from services.registry.application import Registry
from services.registry.key_tables import PostgresKeyTable
from services.registry.sealing import KeyStore
from services.settings import Settings
from tests.support.environment import deployment_env
from tests.support.factories import register_command
from tests.support.postgres import Cluster


@pytest.fixture
def pg_settings(postgres: Cluster, tmp_path: Path) -> Iterator[Settings]:
    """A fresh deployment on its own schema of the session's cluster."""
    with postgres.fresh_schema() as schema:
        # no broker is used here: PLAINTEXT, so no ACLs are asked for
        no_broker = {"KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}
        env = deployment_env(tmp_path / "var", "127.0.0.1:9092", **postgres.env(),
                             POSTGRES_SCHEMA=schema, **no_broker)  # fmt: skip
        yield Settings.from_env(env)


def test_registries_starting_together_on_a_fresh_store_all_open_it(pg_settings: Settings) -> None:
    with ThreadPoolExecutor(4) as pool:
        registries = list(pool.map(lambda _: Registry(pg_settings), range(4)))
    try:
        for registry in registries:
            registry.handle(register_command())
        assert all(r.recorder.max_notification_id() == 8 for r in registries)
    finally:
        for registry in registries:
            registry.close()


def relation_file(postgres: Cluster, table: str) -> Path:
    """The data file of `table`, its pages flushed to disk (the tests run as its owner, root)."""
    with postgres.connect() as conn:
        conn.execute("CHECKPOINT")
        row = conn.execute(
            "SELECT current_setting('data_directory'), pg_relation_filepath(%s)", (table,)
        ).fetchone()
    assert row is not None
    return Path(row[0]) / row[1]


def test_a_destroyed_data_key_leaves_no_copy_in_the_tables_pages(
    pg_settings: Settings, postgres: Cluster
) -> None:
    keys = KeyStore(PostgresKeyTable(pg_settings), secrets.token_bytes(32))
    accounts = [uuid.uuid4() for _ in range(20)]
    for account in accounts:
        keys.key(account, create=True)
    keys.flush()
    table = f"{pg_settings.postgres_schema}.data_keys"
    with postgres.connect() as conn:
        rows = conn.execute(f"SELECT account_id, wrapped FROM {table}").fetchall()
    wrapped = {name: bytes(value) for name, value in rows}
    assert wrapped[str(accounts[7])] in relation_file(postgres, table).read_bytes()

    keys.destroy(accounts[7])

    pages = relation_file(postgres, table).read_bytes()
    assert wrapped[str(accounts[7])] not in pages
    assert wrapped[str(accounts[8])] in pages  # the others are still there
    assert keys.key(accounts[7]) is None
    keys.close()
