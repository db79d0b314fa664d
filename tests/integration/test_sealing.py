"""The key store and the sealer on real SQLite files: one key per citizen, made once, shredded."""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path

import pytest

from services.registry.sealing import ERASED, PREFIX, KeyRaceError, KeyStore, Sealer

KEK = secrets.token_bytes(32)


def test_a_sealed_field_opens_for_its_account_only(tmp_path: Path) -> None:
    sealer = Sealer(KeyStore(tmp_path / "keys.sqlite", KEK))
    mine, other = uuid.uuid4(), uuid.uuid4()
    sealed = sealer.seal(mine, "Nguyễn Thị Lan")

    assert sealed.startswith(PREFIX) and "Nguyễn" not in sealed
    assert sealer.open(mine, sealed) == "Nguyễn Thị Lan"
    sealer.seal(other, "x")
    with pytest.raises(Exception):  # noqa: B017 - bound to its account: the tag does not verify
        sealer.open(other, sealed)


def test_keys_made_in_a_batch_become_durable_together_at_flush(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "keys.sqlite", KEK)
    accounts = [uuid.uuid4() for _ in range(3)]
    made = [keys.key(a, create=True) for a in accounts]
    before_flush = KeyStore(tmp_path / "keys.sqlite", KEK)

    assert [before_flush.key(a) for a in accounts] == [None, None, None]
    keys.flush()
    after_flush = KeyStore(tmp_path / "keys.sqlite", KEK)
    assert [after_flush.key(a) for a in accounts] == made


def test_destroying_a_key_erases_every_sealed_copy(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "keys.sqlite", KEK)
    sealer = Sealer(keys)
    account = uuid.uuid4()
    sealed = sealer.seal(account, "056190001234")
    keys.flush()

    keys.destroy(account)

    assert sealer.open(account, sealed) == ERASED
    assert Sealer(KeyStore(tmp_path / "keys.sqlite", KEK)).open(account, sealed) == ERASED


def test_two_writers_making_one_accounts_key_agree_on_the_first(tmp_path: Path) -> None:
    first, second = (KeyStore(tmp_path / "keys.sqlite", KEK) for _ in range(2))
    account = uuid.uuid4()
    key_of_first = first.key(account, create=True)
    second.key(account, create=True)
    first.flush()

    with pytest.raises(KeyRaceError):
        second.flush()
    assert second.key(account) == key_of_first  # the retry seals with the stored key
