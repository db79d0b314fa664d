"""The key store and the sealer on real stores (a SQLite file; a PostgreSQL table): one key per
citizen, made once, shredded."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable

import pytest

from services.registry.key_tables import PostgresKeyTable
from services.registry.sealing import ERASED, PREFIX, KeyRaceError, KeyStore, Sealer
from services.settings import Settings

KEK = secrets.token_bytes(32)


@pytest.fixture
def open_keys(settings: Settings) -> Callable[[], KeyStore]:
    """Opens the key store of this test's deployment again at each call (as another process
    would): its SQLite file, or its table in the PostgreSQL store."""

    def open_store() -> KeyStore:
        if settings.event_store == "postgres":
            return KeyStore(PostgresKeyTable(settings), KEK)
        return KeyStore(settings.var_dir / "keys.sqlite", KEK)

    return open_store


def test_a_sealed_field_opens_for_its_account_only(open_keys: Callable[[], KeyStore]) -> None:
    sealer = Sealer(open_keys())
    mine, other = uuid.uuid4(), uuid.uuid4()
    sealed = sealer.seal(mine, "Nguyễn Thị Lan")

    assert sealed.startswith(PREFIX) and "Nguyễn" not in sealed
    assert sealer.open(mine, sealed) == "Nguyễn Thị Lan"
    sealer.seal(other, "x")
    with pytest.raises(Exception):  # noqa: B017 - bound to its account: the tag does not verify
        sealer.open(other, sealed)


def test_keys_made_in_a_batch_become_durable_together_at_flush(
    open_keys: Callable[[], KeyStore],
) -> None:
    keys = open_keys()
    accounts = [uuid.uuid4() for _ in range(3)]
    made = [keys.key(a, create=True) for a in accounts]
    before_flush = open_keys()

    assert [before_flush.key(a) for a in accounts] == [None, None, None]
    keys.flush()
    after_flush = open_keys()
    assert [after_flush.key(a) for a in accounts] == made


def test_destroying_a_key_erases_every_sealed_copy(open_keys: Callable[[], KeyStore]) -> None:
    keys = open_keys()
    sealer = Sealer(keys)
    account = uuid.uuid4()
    sealed = sealer.seal(account, "056190001234")
    keys.flush()

    keys.destroy(account)

    assert sealer.open(account, sealed) == ERASED
    assert Sealer(open_keys()).open(account, sealed) == ERASED


def test_two_writers_making_one_accounts_key_agree_on_the_first(
    open_keys: Callable[[], KeyStore],
) -> None:
    first, second = (open_keys() for _ in range(2))
    account = uuid.uuid4()
    key_of_first = first.key(account, create=True)
    second.key(account, create=True)
    first.flush()

    with pytest.raises(KeyRaceError):
        second.flush()
    assert second.key(account) == key_of_first  # the retry seals with the stored key
