"""Two writers inserting overlapping batches of data keys at once (two API processes taking the
same backlog, say): on PostgreSQL each waits for the other in one order, never in a cycle; on
SQLite one writer at a time. Either way every account ends with one key, and each writer is told
which of its keys lost."""

from __future__ import annotations

import secrets
import threading
import uuid
from typing import Any

from services.registry.key_tables import PostgresKeyTable, SqliteKeyTable
from services.settings import Settings


def test_overlapping_batches_never_deadlock(settings: Settings) -> None:
    tables: list[Any]
    if settings.event_store == "postgres":
        tables = [PostgresKeyTable(settings), PostgresKeyTable(settings)]
    else:  # two connections to one file, as two processes would have
        path = settings.var_dir / "keys-two-writers.sqlite"
        tables = [SqliteKeyTable(path), SqliteKeyTable(path)]
    failures: list[BaseException] = []
    for _ in range(15):  # bounded: 15 rounds of 60 shared accounts
        names = [str(uuid.uuid4()) for _ in range(60)]
        batches = [
            {n: secrets.token_bytes(40) for n in names},  # one writer in one order
            {n: secrets.token_bytes(40) for n in reversed(names)},  # the other reversed
        ]
        start = threading.Barrier(2)
        lost: list[set[str]] = [set(), set()]

        def insert(i: int, start: threading.Barrier, batch: dict[str, bytes]) -> None:
            start.wait()
            try:
                lost[i] = tables[i].insert_new(batch)  # noqa: B023 - joined in this round
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

        threads = [threading.Thread(target=insert, args=(i, start, batches[i])) for i in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not failures, failures
        # Every account has exactly one key: each writer lost exactly the ones the other won.
        assert lost[0] | lost[1] == set(names) and not lost[0] & lost[1]
    for table in tables:
        table.close()
