"""Per-principal command limits shared by every API process on one store (SQLite file or
PostgreSQL table): the token bucket, updated in one statement per command."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
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


def test_the_cost_of_a_shared_limit_per_command(env_for, store) -> None:
    """One take per command: the median of 5 runs of 300 takes, printed (pytest -s) and
    bounded loosely (the machine is shared)."""
    settings = Settings.from_env(env_for())
    credentials = open_credential_store(settings)
    medians = []
    try:
        for run in range(5):
            costs = []
            for i in range(300):
                started = time.perf_counter()
                credentials.take(f"dev-{run}-{i % 10}", 20.0, 200)
                costs.append(time.perf_counter() - started)
            medians.append(statistics.median(costs))
    finally:
        credentials.close()
    print(f"\nshared limit, {store}: median per command {statistics.median(medians) * 1e3:.3f} ms "
          f"(runs: {', '.join(f'{m * 1e3:.3f}' for m in medians)} ms)")  # fmt: skip
    assert statistics.median(medians) < 0.05
