"""Per-principal command limits shared by every API process on one store (SQLite file or
PostgreSQL table): the token bucket, updated in one statement per command."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.api.limits import CommandLimit
from services.credentials import CredentialStore, SqliteCredentialStore, open_credential_store
from services.settings import Settings
from tests.support.environment import bearer
from tests.support.factories import registration_body


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


# --- the bucket (SQLite store, a clock of the test's own) --------------------------------------


def test_a_burst_passes_then_the_next_waits_for_a_refill(tmp_path) -> None:
    clock = Clock()
    store = SqliteCredentialStore(tmp_path / "credentials.sqlite", clock=clock)
    assert [store.take("dev-1", 2.0, 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert store.take("dev-1", 2.0, 3) == 0.5
    clock.now += 0.5
    assert store.take("dev-1", 2.0, 3) == 0.0
    clock.now -= 60  # a clock that went back refills nothing (and takes nothing back)
    assert store.take("dev-1", 2.0, 3) == 0.5


def test_each_principal_has_its_own_bucket(tmp_path) -> None:
    store = SqliteCredentialStore(tmp_path / "credentials.sqlite", clock=Clock())
    assert store.take("dev-1", 1.0, 1) == 0.0
    assert store.take("dev-1", 1.0, 1) > 0
    assert store.take("dev-2", 1.0, 1) == 0.0


def test_a_stations_day_never_meets_the_default_limit(tmp_path) -> None:
    """300 registrations in a day, even all within one minute, stay under 20/s after 200."""
    clock = Clock()
    store = SqliteCredentialStore(tmp_path / "credentials.sqlite", clock=clock)
    waits = []
    start = clock.now
    for i in range(300):
        clock.now = start + i * 0.2  # one every 200 ms: a minute for all of them
        waits.append(store.take("station-cam-ranh", 20.0, 200))
    assert set(waits) == {0.0}


# --- shared by processes, on both stores -------------------------------------------------------


@pytest.fixture
def two_apps(kafka_bootstrap, env_for, chdb_url) -> Iterator[tuple[TestClient, TestClient]]:
    """Two API instances on one deployment's store (each with its own credential store object,
    as two processes have): a burst of 3, then one command in 100 s."""
    env = env_for(CLICKHOUSE_URL=chdb_url, COMMAND_BURST="3", COMMAND_RATE="0.01")
    settings = Settings.from_env(env)
    first = create_app(settings, embedded_projector=False, embedded_signer=False)
    second = create_app(settings, embedded_projector=False, embedded_signer=False)
    with TestClient(first) as a, TestClient(second) as b:
        yield a, b


def test_two_api_processes_on_one_store_share_one_limit(two_apps) -> None:
    a, b = two_apps

    def send(client: TestClient, role: str = "station") -> Any:
        return client.post("/v1/registrations", json=registration_body(), headers=bearer(role))

    assert [send(a).status_code for _ in range(2)] == [201, 201]
    assert send(b).status_code == 201  # the third of the burst, wherever it goes
    refused = [send(b), send(a)]  # both instances see the bucket the other emptied
    assert [r.status_code for r in refused] == [429, 429]
    assert all(r.json()["error"]["code"] == "rate_limited" for r in refused)
    assert all(int(r.headers["Retry-After"]) >= 90 for r in refused)  # 1 token at 0.01/s
    assert send(b, "admin").status_code == 201  # another principal: its own bucket


def test_concurrent_takes_from_two_stores_grant_exactly_the_burst(env_for) -> None:
    """The update is one atomic statement: 8 threads on two store objects (two processes'
    worth of connections) racing for one bucket get exactly `burst` tokens between them."""
    settings = Settings.from_env(env_for())
    stores = [open_credential_store(settings), open_credential_store(settings)]
    granted: list[int] = []
    lock = threading.Lock()

    def worker(store: CredentialStore) -> None:
        mine = sum(store.take("dev-race", 0.001, 60) == 0.0 for _ in range(25))
        with lock:
            granted.append(mine)

    threads = [threading.Thread(target=worker, args=(stores[i % 2],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for store in stores:
        store.close()
    assert len(granted) == 8 and sum(granted) == 60


def test_a_lease_takes_up_to_n_whole_tokens(tmp_path) -> None:
    clock = Clock()
    store = SqliteCredentialStore(tmp_path / "credentials.sqlite", clock=clock)
    leases = [store.lease("dev-1", 2.0, 10, 4) for _ in range(4)]
    assert leases == [(4, 0.0), (4, 0.0), (2, 0.0), (0, 0.5)]
    clock.now += 1.25  # 2.5 tokens refilled: two whole ones
    assert store.lease("dev-1", 2.0, 10, 4) == (2, 0.0)
    assert store.take("dev-1", 2.0, 10) == 0.25  # half a token left, a quarter second to go


class Counting:
    """A credential store that counts its leases (for the pure logic of CommandLimit)."""

    def __init__(self, store: CredentialStore) -> None:
        self.store, self.calls, self.taken = store, 0, 0

    def lease(self, principal_id: str, rate: float, burst: int, n: int) -> tuple[int, float]:
        self.calls += 1
        taken, wait = self.store.lease(principal_id, rate, burst, n)
        self.taken += taken
        return taken, wait


def admit(limit: CommandLimit, principal_id: str) -> bool:
    """What the rate_limited dependency does for one command."""
    return limit.spend(principal_id) or limit.lease(principal_id) == 0.0


def test_a_busy_principal_leases_in_growing_lots_and_a_quiet_one_one_at_a_time(tmp_path) -> None:
    ticks = Clock()
    counting = Counting(SqliteCredentialStore(tmp_path / "c.sqlite", clock=ticks))
    limit = CommandLimit(counting, rate=0.001, burst=10_000, clock=ticks)  # type: ignore[arg-type]
    assert all(admit(limit, "busy") for _ in range(300))
    assert counting.calls <= 10  # lots 1, 2, 4 ... 64: not one statement per command
    assert 300 <= counting.taken <= 300 + CommandLimit.LOT_MAX
    calls = counting.calls
    for _ in range(5):  # one command every 2 s: each lease has expired, lots of one
        ticks.now += 2
        assert admit(limit, "quiet")
    assert counting.calls - calls == 5 and counting.taken <= 300 + CommandLimit.LOT_MAX + 5


def test_leases_of_two_processes_never_admit_more_than_the_shared_bucket(env_for) -> None:
    settings = Settings.from_env(env_for())
    stores = [open_credential_store(settings), open_credential_store(settings)]
    try:
        limits = [CommandLimit(store, rate=0.001, burst=100) for store in stores]
        admitted = sum(admit(limits[i % 2], "dev-shared") for i in range(400))
    finally:
        for store in stores:
            store.close()
    lot = max(1, min(CommandLimit.LOT_MAX, 100 // 10))
    assert 100 - 2 * lot <= admitted <= 100  # at most a lot per process left unspent
