"""The read models per query (projections/views.sql) on the real engine and broker: they agree
with the rows they count, a batch inserted twice counts once, old read models are backfilled,
and a rebuild swaps them in with the rows."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from projections.audit import COLUMNS, AuditTrail, audit_trail
from projections.clickhouse import connect
from projections.rebuild import rebuild
from services.registry.application import Registry
from services.registry.commands import ActivateAccount, DecideRegistration, SetTarget
from services.registry.targets import Target
from services.settings import Settings
from tests.support.broker import as_admin
from tests.support.factories import approve_command, register_command
from tests.support.kafka import publish_all
from tests.support.read_models import projector_for, run_until

COMMUNES = ("22420", "22453", "22528")  # in Khánh Hòa (56)
WHOLE_WINDOW = (datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))


def loaded(settings: Settings, chdb_url: str) -> tuple[Registry, AuditTrail]:
    """A store with registrations in three communes, some approved and activated, projected."""
    registry = Registry(settings)
    for i in range(12):
        command = register_command(commune=COMMUNES[i % 3])
        registry.handle(command)
        if i % 2 == 0:
            registry.handle(approve_command(command.citizen_id))
            registry.handle(ActivateAccount(command_id=f"act-{i}-{command.citizen_id}",
                                            citizen_id=command.citizen_id, method="vneid_app",
                                            activated_at="2023-06-27T11:00:00+07:00"))  # fmt: skip
    events = publish_all(settings, registry)
    projector = projector_for(settings, chdb_url)
    run_until(projector, events)
    projector.close()
    return registry, projector.trail


def figures(trail: AuditTrail) -> dict[str, Any]:
    """What the per-query tables say, beside the same figures computed from the rows."""
    db, rows = trail.database, trail.table
    q = trail.client.query_rows
    return {
        "rows": q(f"SELECT count() FROM {rows}")[0][0],
        "hourly": sorted(
            q(
                f"SELECT commune_code, hour, event_type, sum(n) FROM {db}.hourly_totals "
                "GROUP BY ALL HAVING sum(n) > 0"
            )
        ),  # fmt: skip
        "hourly_from_rows": sorted(
            q(
                f"SELECT commune_code, toStartOfHour(occurred_at), "
                f"event_type, count() FROM {rows} GROUP BY ALL"
            )
        ),  # fmt: skip
        "progress": {c: trail.cumulative("commune", c) for c in COMMUNES},
        "progress_from_rows": {
            c: {c: {"received": r, "activated": a}}
            for c, r, a in q(
                "SELECT commune_code, "
                "uniqExactIf(account_id, event_type = 'registration_received' AND sequence = 1), "
                f"uniqExactIf(account_id, event_type = 'account_activated') FROM {rows} "
                f"GROUP BY commune_code"
            )
        },  # fmt: skip
        "freshness_rows": q(f"SELECT sum(events) FROM {db}.freshness_by_minute")[0][0],
    }


def test_per_query_tables_agree_with_the_rows(kafka_bootstrap, settings, chdb_url) -> None:
    _, trail = loaded(settings, chdb_url)
    found = figures(trail)
    assert found["rows"] == 24  # 12 registrations, 6 decisions, 6 activations
    assert found["hourly"] == found["hourly_from_rows"]
    assert found["progress"] == found["progress_from_rows"]
    assert found["progress"]["22420"]["22420"] == {"received": 4, "activated": 2}
    assert found["freshness_rows"] == found["rows"]
    assert set(trail.cumulative("province", "56")) == set(COMMUNES)


def test_a_retake_is_not_a_second_account(kafka_bootstrap, settings, chdb_url) -> None:
    """Progress counts accounts, not registrations: rejected (unreadable fingerprints, say)
    and taken again, a citizen is received once; activated, once."""
    registry = Registry(settings)
    first = register_command(commune=COMMUNES[0])
    registry.handle(first)
    registry.handle(DecideRegistration(command_id=f"rej-{first.citizen_id}",
                                       citizen_id=first.citizen_id, decision="rejected",
                                       reason="unreadable fingerprints",
                                       decided_at="2023-06-27T10:00:00+07:00"))  # fmt: skip
    retake = dataclasses.replace(register_command(first.citizen_id, COMMUNES[0]),
                                 captured_at="2023-06-27T11:00:00+07:00")  # fmt: skip
    registry.handle(retake)
    registry.handle(approve_command(first.citizen_id))
    registry.handle(register_command(commune=COMMUNES[0]))  # another citizen
    events = publish_all(settings, registry)
    projector = projector_for(settings, chdb_url)
    run_until(projector, events)
    projector.close()
    trail = projector.trail
    received = trail.client.query_rows(
        f"SELECT count() FROM {trail.table} WHERE event_type = 'registration_received'"
    )[0][0]
    assert received == 3  # two registrations of one citizen, one of another
    assert trail.cumulative("commune", COMMUNES[0]) == {
        COMMUNES[0]: {"received": 2, "activated": 0}
    }
    assert trail.cumulative("province", "56")[COMMUNES[0]]["received"] == 2


def test_a_batch_inserted_twice_counts_once(kafka_bootstrap, settings, chdb_url) -> None:
    registry = Registry(settings)
    for commune in COMMUNES:
        registry.handle(register_command(commune=commune))
    publish_all(settings, registry)
    projector = projector_for(settings, chdb_url)
    polled = poll_all(settings, 3)
    assert projector.store_batch(polled) == 3
    once = figures(projector.trail)
    assert projector.store_batch(polled) == 3  # a retry after a crash, a late second projector
    assert figures(projector.trail) == once
    assert once["rows"] == 3 and sum(n for *_, n in once["hourly"]) == 3
    # Another batch (other partitions or offsets) is not taken for the same one: the token
    # names the batch, not its content (the same records in another batch are stored again).
    tp, records = next(iter(polled.items()))
    projector.store_batch({tp: records[:1]})  # a part of the batch: another offset range
    assert figures(projector.trail)["rows"] == 3 + 1
    projector.close()


def poll_all(settings: Settings, count: int) -> dict[TopicPartition, list[Any]]:
    consumer = KafkaConsumer(
        **as_admin(settings.kafka_bootstrap),
        isolation_level="read_committed",
        enable_auto_commit=False,
    )
    try:
        parts = [TopicPartition(settings.kafka_topic, p)
                 for p in consumer.partitions_for_topic(settings.kafka_topic) or ()]  # fmt: skip
        consumer.assign(parts)
        consumer.seek_to_beginning()
        polled: dict[TopicPartition, list[Any]] = {}
        for _ in range(50):
            for tp, records in consumer.poll(timeout_ms=200).items():
                polled.setdefault(tp, []).extend(records)
            if sum(map(len, polled.values())) >= count:
                return polled
        raise AssertionError("the records did not arrive")
    finally:
        consumer.close()


def test_read_models_made_before_the_views_are_backfilled(
    kafka_bootstrap, settings, chdb_url
) -> None:
    _, trail = loaded(settings, chdb_url)
    before = figures(trail)
    for table in ("hourly_totals", "commune_totals", "freshness_by_minute"):
        trail.client.command(f"TRUNCATE TABLE {trail.database}.{table}")
    assert figures(trail)["hourly"] == []
    connect(chdb_url, trail.database)  # what the next start does
    after = figures(trail)
    assert after["hourly"] == before["hourly"] and after["progress"] == before["progress"]


def test_read_models_of_the_older_layout_are_replaced_and_filled(
    kafka_bootstrap, settings, chdb_url
) -> None:
    """Tables of the layout before hourly_totals / device_activity / commune_totals /
    freshness_by_minute are dropped at the next start, and the new ones filled from the rows."""
    _, trail = loaded(settings, chdb_url)
    before = figures(trail)
    db = trail.database
    for table in ("hourly_totals", "device_activity", "commune_totals", "freshness_by_minute"):
        trail.client.command(f"DROP TABLE {db}.{table}_mv")
        trail.client.command(f"DROP TABLE {db}.{table}")
    trail.client.command(
        f"CREATE TABLE {db}.hourly_counts (n UInt64) ENGINE = MergeTree ORDER BY n"
    )
    trail.client.command(
        f"CREATE MATERIALIZED VIEW {db}.hourly_counts_mv TO {db}.hourly_counts AS "
        f"SELECT toUInt64(count()) AS n FROM {db}.audit_events"
    )
    connect(chdb_url, db)  # what the next start does
    tables = {r[0] for r in trail.client.query_rows(f"SHOW TABLES FROM {db}")}
    assert "hourly_counts" not in tables and "hourly_counts_mv" not in tables
    assert figures(trail) == before
    assert trail.device_days("commune", COMMUNES[0], *WHOLE_WINDOW)  # filled too


def test_a_rebuild_swaps_in_the_counts_with_the_rows(kafka_bootstrap, settings, chdb_url) -> None:
    settings = dataclasses.replace(settings, clickhouse_url=chdb_url)
    _, trail = loaded(settings, chdb_url)
    before = figures(trail)
    trail.client.command(f"TRUNCATE TABLE {trail.database}.hourly_totals")  # damaged counts
    rebuild(settings, show_progress=False)
    after = figures(audit_trail(chdb_url, settings.clickhouse_database))
    assert after["hourly"] == before["hourly"] and after["progress"] == before["progress"]
    assert after["rows"] == before["rows"]


def test_targets_come_from_one_book_kept_up_to_date(settings: Settings) -> None:
    registry = Registry(settings)

    def set_target(commune: str, metric: str, target: int, deadline: str) -> None:
        registry.handle(SetTarget(command_id=f"t-{commune}-{metric}-{target}",
                                  commune_code=commune, province_code="56", metric=metric,
                                  target=target, deadline=deadline))  # fmt: skip

    set_target("22420", "received", 100, "2023-12-31")
    set_target("22453", "activated", 50, "2023-11-30")
    registry.handle(register_command(commune="22420"))  # other events in between
    first = registry.targets()
    assert first == {("22420", "received"): Target(100, "2023-12-31"),
                     ("22453", "activated"): Target(50, "2023-11-30")}  # fmt: skip
    set_target("22420", "received", 120, "2024-01-31")  # revised: the latest wins
    set_target("22528", "received", 10, "2023-12-31")
    second = registry.targets()
    assert second[("22420", "received")] == Target(120, "2024-01-31")
    assert len(second) == 3
    assert registry.target("22420", "received").target == 120  # type: ignore[union-attr]


def test_a_long_dashboard_read_does_not_hold_up_the_projector(
    kafka_bootstrap, env_for, chdb_url
) -> None:
    from fastapi.testclient import TestClient

    from services.api.app import create_app
    from tests.support.environment import TOKENS
    from tests.support.factories import registration_body
    from tests.support.waiting import wait_until

    settings = Settings.from_env(env_for(CLICKHOUSE_URL=chdb_url))
    with TestClient(create_app(settings, embedded_signer=False)) as client:
        backbone = client.app.state.backbone  # type: ignore[attr-defined]
        headers = {"Authorization": f"Bearer {TOKENS['station']}"}
        with backbone.trail.client._lock:  # the API's reads wait, as behind a long query
            answer = client.post("/v1/registrations", json=registration_body(), headers=headers)
            assert answer.status_code == 201
            publish_all(settings, backbone.registry)
            wait_until(lambda: backbone.projector.stored >= 1, 30)  # stored all the same


def test_reads_kept_in_the_events_table_by_older_read_models_are_not_history_events(
    kafka_bootstrap, env_for, chdb_url
) -> None:
    settings = Settings.from_env(env_for())
    registry, trail = loaded(settings, chdb_url)
    account = trail.client.query_rows(f"SELECT any(account_id) FROM {trail.table}")[0][0]
    events, reads = trail.history_and_reads(account)
    assert events and not reads
    # an older read model kept the reads of an account among its events
    row = trail.client.query_rows(
        f"SELECT * EXCEPT (projected_at, shown) FROM {trail.table} WHERE account_id = "
        "{a:UUID} ORDER BY sequence LIMIT 1",
        {"a": str(account)},
    )[0]
    names = list(COLUMNS)
    old_read = list(row)
    old_read[names.index("event_type")] = "history_read"
    old_read[names.index("sequence")] = 99
    trail.client.insert(trail.table, [old_read], names)
    assert (
        trail.client.query_rows(
            f"SELECT count() FROM {trail.table} WHERE account_id = {{a:UUID}}", {"a": str(account)}
        )[0][0]
        == len(events) + 1
    )
    again, reads_again = trail.history_and_reads(account)
    assert again == events and not reads_again
    assert trail.history(account) == events
