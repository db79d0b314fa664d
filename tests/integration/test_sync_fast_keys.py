"""A batch reads its accounts' data keys in a few queries (`KeyStore.preloaded`), with the same
keys, the same refusals and the same race detection as one query per account."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from services.registry.application import Registry
from services.registry.key_tables import PostgresKeyTable
from services.registry.sealing import ERASED, KeyRaceError, KeyStore, Sealer
from services.settings import Settings
from tests.support.factories import approve_command, register_command

KEK = secrets.token_bytes(32)


@pytest.fixture
def open_keys(settings: Settings) -> Callable[[], KeyStore]:
    def open_store() -> KeyStore:
        if settings.event_store == "postgres":
            return KeyStore(PostgresKeyTable(settings), KEK)
        return KeyStore(settings.var_dir / "keys.sqlite", KEK)

    return open_store


class CountingTable:
    """A key table that counts single-row reads."""

    def __init__(self, table: Any) -> None:
        self.table, self.single_reads = table, 0

    def wrapped(self, name: str) -> Any:
        self.single_reads += 1
        return self.table.wrapped(name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.table, name)


def test_preloaded_keys_are_the_stored_ones_and_new_ones_are_made(
    open_keys: Callable[[], KeyStore],
) -> None:
    writer = open_keys()
    stored, erased, new = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    stored_key = writer.key(stored, create=True)
    writer.key(erased, create=True)
    writer.flush()
    writer.destroy(erased)

    keys = open_keys()
    counting = CountingTable(keys._db)
    keys._db = counting  # type: ignore[assignment]
    with keys.preloaded([stored, erased, new, stored]):
        assert keys.key(stored, create=True) == stored_key
        assert keys.key(erased, create=True) is None  # destroyed: never made again
        made = keys.key(new, create=True)
        assert made is not None and keys.key(new, create=True) == made
        assert counting.single_reads == 0
        keys.flush()
    assert open_keys().key(new) == made
    assert keys._preloaded == {}


def test_a_row_read_ahead_is_used_once_then_the_store_is_asked(
    open_keys: Callable[[], KeyStore],
) -> None:
    keys, other = open_keys(), open_keys()
    account = uuid.uuid4()
    counting = CountingTable(keys._db)
    keys._db = counting  # type: ignore[assignment]
    with keys.preloaded([account]):
        pass
    assert keys.key(account, create=False) is None and counting.single_reads == 1
    with keys.preloaded([account]):
        made = other.key(account, create=True)  # another writer, after the read ahead
        other.flush()
        assert keys.key(account) == made  # not creating: the store is asked, not the read
        assert counting.single_reads == 2


def test_a_key_another_writer_made_after_the_read_ahead_is_a_race_at_flush(
    open_keys: Callable[[], KeyStore],
) -> None:
    keys, other = open_keys(), open_keys()
    account = uuid.uuid4()
    with keys.preloaded([account]):
        theirs = other.key(account, create=True)
        other.flush()
        mine = keys.key(account, create=True)  # read ahead as absent: made here too
        assert mine != theirs
        with pytest.raises(KeyRaceError):
            keys.flush()
    assert keys.key(account, create=True) == theirs


def test_a_batch_reads_no_key_row_by_row_and_seals_with_each_accounts_key(
    settings: Settings,
) -> None:
    registry = Registry(settings)
    try:
        first = [register_command() for _ in range(5)]
        assert not any(isinstance(r, Exception) for r in registry.handle_batch(list(first)))
        registry.keys._cache.clear()  # as in another process: every key from the store
        counting = CountingTable(registry.keys._db)
        registry.keys._db = counting  # type: ignore[assignment]
        batch = [approve_command(c.citizen_id) for c in first] + [register_command()]
        results = registry.handle_batch(batch)
        assert not any(isinstance(r, Exception) for r in results)
        assert counting.single_reads == 0
        for command in [*first, batch[-1]]:
            account = registry.account(command.citizen_id)
            assert account is not None
            sealed = account.registration["sealed_full_name"]
            assert registry.reveal(account.id, sealed) == command.full_name
    finally:
        registry.close()


def test_a_batch_after_an_erasure_refuses_to_seal_again(settings: Settings) -> None:
    registry = Registry(settings)
    try:
        command = register_command()
        registry.handle(command)
        account_id = registry.account_id(command.citizen_id)
        sealed = registry.account(command.citizen_id).registration  # type: ignore[union-attr]
        registry.keys.destroy(account_id)
        again = Sealer(registry.keys)
        assert again.open(account_id, sealed["sealed_full_name"]) == ERASED
        (result,) = registry.handle_batch([register_command(command.citizen_id)])
        assert type(result).__name__ == "ErasedError"
    finally:
        registry.close()
