"""The one place that builds ClickHouse clients (chdb:// embedded or http:// server) and DDL."""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import clickhouse_connect
import orjson
from clickhouse_connect.driver.client import Client

SQL_DIR = Path(__file__).parent
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def connect(url: str, database: str) -> Client:
    """A client on `url`, with `database` created if missing and its read-model tables made."""
    client = clickhouse_connect.get_client(dsn=url)
    make_read_models(client, database)
    return client


def make_read_models(client: Client, database: str) -> None:
    """Create `database` if missing and its read-model tables (*.sql), fill new derived ones."""
    if not _IDENT.match(database):
        raise ValueError(f"invalid ClickHouse database name {database!r}")
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    for statement in _ddl():
        client.command(statement.format(db=database))
    _backfill(client, database)


@cache
def _ddl() -> tuple[str, ...]:
    return tuple(s for path in sorted(SQL_DIR.glob("*.sql")) for s in _statements(path.read_text()))


def _backfill(client: Client, database: str) -> None:
    """Fill a derived table that is empty while its source has rows (read models made before
    it existed): its materialized view only sees new inserts. Runs before the projector."""
    views = client.query(
        "SELECT name, as_select FROM system.tables WHERE database = {d:String} "
        "AND engine = 'MaterializedView'",
        parameters={"d": database},
    ).result_rows
    for name, select in views:
        target = name.removesuffix("_mv")
        source = re.search(rf"FROM {database}\.(\w+)", select)
        if source is None or _count(client, f"{database}.{target}"):
            continue
        if _count(client, f"{database}.{source.group(1)}"):
            client.command(f"INSERT INTO {database}.{target} {select}")


def _count(client: Client, table: str) -> int:
    return int(client.query(f"SELECT count() FROM {table}").result_rows[0][0])


def _statements(sql: str) -> list[str]:
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _dedup_settings(token: str | None) -> dict[str, Any] | None:
    """With a token, the same block inserted again is dropped, in the table and in the views
    fed from it."""
    if not token:
        return None
    return {"insert_deduplication_token": token,
            "deduplicate_blocks_in_dependent_materialized_views": 1}  # fmt: skip


class LockedClient:
    """Serialises one client's use across threads (an embedded engine handle is not shared)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._types: dict[tuple[str, tuple[str, ...]], Sequence[Any]] = {}

    def query_rows(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        with self._lock:
            return [tuple(r) for r in self._client.query(sql, parameters=parameters).result_rows]

    def insert(
        self,
        table: str,
        data: list[list[Any]],
        column_names: list[str],
        dedup_token: str | None = None,
        by_column: bool = False,
    ) -> None:
        """INSERT `data`: a list of rows, or with `by_column` a list of columns (cheaper: the
        client sends columns). With `dedup_token` the same block inserted again is dropped,
        in the table and in the views fed from it."""
        settings = _dedup_settings(dedup_token)
        key = (table, tuple(column_names))
        with self._lock:
            context = self._client.create_insert_context(
                table, column_names, column_types=self._types.get(key),
                column_oriented=by_column, settings=settings, data=data,
            )  # fmt: skip
            # The column types are asked of the server once per table (not per batch).
            self._types[key] = context.column_types
            self._client.insert(context=context)

    def insert_json_columns(
        self,
        table: str,
        columns: list[list[Any]],
        column_names: list[str],
        dedup_token: str | None = None,
    ) -> None:
        """INSERT `columns` (a list of columns) sent as one JSONCompactColumns document: orjson
        writes it in one call and the engine parses it, without holding Python's GIL (about
        half the cost of the client's own per-value Native encoding). Values must be what
        JSON carries to each column type as text (DateTime64 as seconds, say); `dedup_token`
        as in `insert`."""
        body = orjson.dumps(columns)
        with self._lock:
            self._client.raw_insert(
                table, column_names, body, settings=_dedup_settings(dedup_token),
                fmt="JSONCompactColumns",
            )  # fmt: skip

    def make_read_models(self, database: str) -> None:
        """`make_read_models` on this client (another database beside the first, say)."""
        with self._lock:
            make_read_models(self._client, database)

    def command(self, sql: str) -> Any:
        with self._lock:
            return self._client.command(sql)
