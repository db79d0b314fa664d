"""Several writers on one PostgreSQL event store: two API processes under concurrent load on the
same citizens, the relay publishing every event once in store order, and the table lock that
keeps notification ids in commit order (a transaction held open mid-insert)."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from schemas.codec import citizen_event_codec
from services.registry.application import Registry
from services.relay.relay import PUBLIC_TOPICS, Relay, RelayOptions
from services.settings import Settings
from tests.support.environment import TOKENS, deployment_env
from tests.support.factories import personal_number, register_command, registration_body
from tests.support.kafka import read_topic
from tests.support.postgres import Cluster
from tests.support.processes import free_port, running
from tests.support.waiting import wait_until

STATION = {"Authorization": f"Bearer {TOKENS['station']}"}
REVIEWER = {"Authorization": f"Bearer {TOKENS['reviewer']}"}
CITIZENS = 40  # each: one registration sent to both APIs, two rival decisions


@pytest.fixture
def shared_env(kafka_bootstrap: str, postgres: Cluster, tmp_path: Path) -> Iterator[dict[str, str]]:
    """One deployment on one PostgreSQL schema: what every writer process shares."""
    with postgres.fresh_schema() as schema:
        yield deployment_env(
            tmp_path / "shared", kafka_bootstrap, **postgres.env(), POSTGRES_SCHEMA=schema,
            KEK_FILE=str(tmp_path / "kek"), RELAY_METRICS_PORT="0",
        )  # fmt: skip


@contextmanager
def api_process(env: dict[str, str], directory: Path) -> Iterator[httpx.Client]:
    """`python -m services.api --no-projector` with its own port and chdb, the shared store."""
    port = free_port()
    directory.mkdir(parents=True)
    own = {**env, "API_PORT": str(port), "VAR_DIR": str(directory),
           "CLICKHOUSE_URL": f"chdb://{directory / 'chdb'}"}  # fmt: skip
    with (
        running(["-m", "services.api", "--no-projector"], own, directory / "api.log"),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60, headers=STATION) as http,
    ):
        wait_until(lambda: _answers(http), 90, every=0.2)
        yield http


def _answers(http: httpx.Client) -> bool:
    try:
        return http.get("/healthz").status_code == 200
    except httpx.TransportError:
        return False


def decision(citizen_id: str, verdict: str) -> dict[str, str]:
    return {"command_id": f"dec-{uuid.uuid4()}", "citizen_id": citizen_id, "decision": verdict,
            "reason": "", "decided_at": "2023-06-27T10:05:00+07:00"}  # fmt: skip


def test_two_api_processes_on_one_store_lose_nothing_and_apply_nothing_twice(
    shared_env: dict[str, str], tmp_path: Path, kafka_bootstrap: str
) -> None:
    citizens = [personal_number(serial=i) for i in range(CITIZENS)]
    bodies = [registration_body(citizen_id=c, captured_at="2023-06-27T09:15:00+07:00")
              for c in citizens]  # fmt: skip
    with ExitStack() as stack:
        stack.enter_context(running(["-m", "services.relay"], shared_env, tmp_path / "relay.log"))
        apis = [stack.enter_context(api_process(shared_env, tmp_path / f"api{i}")) for i in (1, 2)]
        with ThreadPoolExecutor(8) as pool:
            # The same registration (same command_id) to both processes at once.
            registered = list(
                pool.map(
                    lambda job: apis[job[0]].post("/v1/registrations", json=job[1]),
                    [(i, b) for b in bodies for i in (0, 1)],
                )
            )
            # Two rival decisions on each citizen, one to each process at once.
            decided = list(pool.map(lambda job: apis[job[0]].post("/v1/decisions",
                                    json=decision(job[1], job[2]), headers=REVIEWER),
                                    [(i, c, v) for c in citizens
                                     for i, v in ((0, "approved"), (1, "rejected"))]))  # fmt: skip

        settings = Settings.from_env(shared_env)
        registry = Registry(settings)
        expected = 2 * CITIZENS  # one registration and one decision each
        wait_until(lambda: _published(registry, settings) >= expected, 90)

    # Idempotent across processes: both got the first outcome; only one of them recorded it.
    refused = [r.text for r in registered if r.status_code != 201]
    assert refused == []
    for first, second in zip(registered[::2], registered[1::2], strict=True):
        assert first.json() == second.json()
        replays = [
            first.headers.get("idempotent-replayed"),
            second.headers.get("idempotent-replayed"),
        ]
        assert sorted(map(str, replays)) == ["None", "true"]
    # Optimistic concurrency: of two rival decisions on one citizen exactly one wins.
    codes = [
        (a.status_code, b.status_code) for a, b in zip(decided[::2], decided[1::2], strict=True)
    ]
    assert all(sorted(pair) == [201, 409] for pair in codes), codes
    for citizen in citizens:
        account = registry.account(citizen)
        assert account is not None and account.version == 2
        assert account.state in ("approved", "rejected")

    # The store holds each event once; the topic holds each of them once, in store order.
    stored = _public_notifications(registry)
    assert len(stored) == expected
    records = read_topic(kafka_bootstrap, settings.kafka_topic, expected)
    codec = citizen_event_codec()
    positions = [codec.decode(r.value)["position"] for r in records]
    assert Counter(positions) == Counter(n.id for n in stored)
    for partition in {r.partition for r in records}:
        mine = [codec.decode(r.value)["position"] for r in records if r.partition == partition]
        assert mine == sorted(mine)
    registry.close()


def _public_notifications(registry: Registry) -> list[Any]:
    found: list[Any] = []
    while batch := registry.recorder.select_notifications(
        start=found[-1].id if found else 0, limit=500, topics=PUBLIC_TOPICS,
        inclusive_of_start=False,
    ):  # fmt: skip
        found.extend(batch)
    return found


def _published(registry: Registry, settings: Settings) -> int:
    """How many public events the store has (all of them once the writers are done)."""
    return len(_public_notifications(registry))


# --- notification ids in commit order ----------------------------------------------------------


def _waiting_on_the_events_table(cluster: Cluster, schema: str) -> int:
    """Sessions waiting for a lock on the schema's events table."""
    with cluster.connect() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = to_regclass(%s)",
            (f"{schema}.registry_events",),
        ).fetchone()
    return int(row[0]) if row else 0


def pause_inside_insert(registry: Registry) -> tuple[list[int], threading.Event, threading.Event]:
    """Make the registry's next save stop inside its transaction, after its INSERT drew its
    notification ids (table lock held, not committed): (ids drawn, inside, release)."""
    recorder: Any = registry.recorder
    fetch_ids = recorder._fetch_ids_after_insert_events
    drawn: list[int] = []
    inside, release = threading.Event(), threading.Event()

    def paused(*args: Any, **kwargs: Any) -> Any:
        ids = fetch_ids(*args, **kwargs)
        if not drawn:
            drawn.extend(ids)
            inside.set()
            release.wait(60)
        return ids

    recorder._fetch_ids_after_insert_events = paused
    return drawn, inside, release


def test_no_later_notification_id_commits_while_an_earlier_transaction_is_open(
    shared_env: dict[str, str], postgres: Cluster, kafka_bootstrap: str
) -> None:
    settings = Settings.from_env(shared_env)
    first, second = Registry(settings), Registry(settings)  # two writers, two connection pools
    first.handle(register_command())
    relay = Relay(settings, first, RelayOptions(batch_size=100))
    relay.start()
    assert relay.step() == 1
    drawn, inside, release = pause_inside_insert(first)
    held = threading.Thread(target=first.handle, args=(register_command(),))
    later = threading.Thread(target=second.handle, args=(register_command(),))
    try:
        held.start()
        assert inside.wait(30)
        later.start()  # writer 2 saves while writer 1's transaction is open ...
        wait_until(lambda: _waiting_on_the_events_table(postgres, settings.postgres_schema), 30)
        assert later.is_alive()  # ... and waits for the table lock instead of drawing an id
        assert relay.step() == 0  # so the relay cannot see (and move past) anything later
        assert (second.recorder.max_notification_id() or 0) < min(drawn)
    finally:
        release.set()
        held.join(30)
        later.join(30)
    while relay.step():
        pass
    relay.close()

    ids = [n.id for n in _public_notifications(second)]
    by_writer = {n.originator_id: n.id for n in _public_notifications(second)}
    assert len(by_writer) == 3 and ids == sorted(ids)
    assert max(by_writer.values()) > max(drawn)  # writer 2's event came after writer 1's
    records = read_topic(kafka_bootstrap, settings.kafka_topic, 3)
    codec = citizen_event_codec()
    assert sorted(codec.decode(r.value)["position"] for r in records) == ids
    first.close()
    second.close()
