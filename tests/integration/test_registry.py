"""The registry on its real SQLite event store: concurrency, restarts, reconciliation."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.registry.application import CommandReuseError, Registry
from services.registry.batching import CommandBatcher
from services.registry.commands import (
    ActivateAccount,
    ChangeStatus,
    DecideRegistration,
    RegisterCitizen,
)
from services.registry.domain import RuleViolationError
from services.registry.reconcile import reconcile
from services.settings import Settings
from tests.support.factories import approve_command, personal_number, register_command


def test_concurrent_commands_on_one_citizen_never_both_apply(env_for) -> None:
    settings = Settings.from_env(env_for())
    registry = Registry(settings)
    citizen = personal_number()
    registry.handle(register_command(citizen))
    start = threading.Barrier(8)
    wins, refusals = [], []

    def decide(decision: str) -> None:
        start.wait()
        command = DecideRegistration(
            command_id=str(uuid.uuid4()),
            citizen_id=citizen,
            decision=decision,
            reason="",
            decided_at="2023-06-27T10:00:00+07:00",
        )
        try:
            wins.append(registry.handle(command))
        except RuleViolationError as exc:
            refusals.append(exc.rule)

    threads = [
        threading.Thread(target=decide, args=("approved" if i % 2 else "rejected",))
        for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(wins) == 1
    assert refusals == ["invalid_transition"] * 7
    account = registry.account(citizen)
    assert account is not None and account.version == 2


def test_separate_registries_on_one_store_serialise_by_optimistic_concurrency(env_for) -> None:
    env = env_for()
    first, second = Registry(Settings.from_env(env)), Registry(Settings.from_env(env))
    citizen = personal_number()
    first.handle(register_command(citizen))
    first.handle(approve_command(citizen))
    stale = second.account(citizen)  # both now load version 2
    first.handle(
        ActivateAccount(
            command_id=str(uuid.uuid4()),
            citizen_id=citizen,
            method="assisted",
            activated_at="2023-06-27T11:00:00+07:00",
        )
    )
    assert stale is not None and stale.version == 2
    lock = ChangeStatus(
        command_id=str(uuid.uuid4()),
        citizen_id=citizen,
        status="locked",
        reason="",
        source="citizen",
        effective_at="2023-06-27T12:00:00+07:00",
    )
    outcome = second.handle(lock)  # reloads, sees the activation, applies on top
    assert outcome.as_dict()["version"] == 4
    assert outcome.as_dict()["account_state"] == "locked"


def test_idempotency_survives_a_restart(env_for) -> None:
    env = env_for()
    command = register_command()
    first = Registry(Settings.from_env(env)).handle(command)
    restarted = Registry(Settings.from_env(env))
    again = restarted.handle(command)
    assert again.duplicate and again.as_dict() == first.as_dict()
    with pytest.raises(CommandReuseError):
        restarted.handle(
            register_command(command.citizen_id).__class__(**{**command.__dict__, "phone": "none"})
        )


CSV_HEADER = "personal_number,date_of_death,registry_reference\n"


def test_death_records_are_reconciled_once(env_for) -> None:
    registry = Registry(Settings.from_env(env_for()))
    known, other = personal_number(), personal_number()
    registry.handle(register_command(known))
    registry.handle(register_command(other))
    text = CSV_HEADER + (
        f"{known},2023-07-01,KT-2023-001\n"
        f"{personal_number()},2023-07-02,KT-2023-002\n"
        f"12345,2023-07-02,KT-2023-003\n"
        f"{other},2999-01-01,KT-2023-004\n"
    )
    first = reconcile(registry, text)
    assert {k: first[k] for k in ("matched", "already_recorded", "unknown", "invalid")} == {
        "matched": 1,
        "already_recorded": 0,
        "unknown": 1,
        "invalid": 2,
    }
    assert [p["line"] for p in first["problems"]] == [4, 5]
    assert known not in str(first)
    second = reconcile(registry, text)
    assert (second["matched"], second["already_recorded"]) == (0, 1)
    account = registry.account(known)
    assert account is not None and account.citizen_status == "deceased" and account.version == 2


def test_a_csv_without_the_columns_is_refused(env_for) -> None:
    with pytest.raises(ValueError, match="registry_reference"):
        reconcile(Registry(Settings.from_env(env_for())), "personal_number,date_of_death\n")


def test_a_batch_applies_in_order_in_one_transaction_with_one_result_each(env_for) -> None:
    registry = Registry(Settings.from_env(env_for()))
    first, second = personal_number(), personal_number()
    register = register_command(first)
    reused = RegisterCitizen(**{**register.__dict__, "phone": "none"})
    batch = [
        register,
        approve_command(first),  # sees the registration made just before, in the same batch
        register,  # a resend inside the batch
        reused,  # same id, other payload
        ActivateAccount(
            command_id=str(uuid.uuid4()),
            citizen_id=second,
            method="assisted",
            activated_at="2023-06-27T11:00:00+07:00",
        ),  # no such account
        register_command(second),
    ]
    before = registry.recorder.max_notification_id() or 0
    results = registry.handle_batch(batch)
    kinds = [type(r).__name__ if isinstance(r, Exception) else r.duplicate for r in results]
    assert kinds == [False, False, True, "CommandReuseError", "AccountNotFoundError", False]
    assert results[1].as_dict()["account_state"] == "approved"  # type: ignore[union-attr]
    # 3 account events and 3 receipts, nothing for the refused commands
    assert (registry.recorder.max_notification_id() or 0) - before == 6
    again = registry.handle_batch(batch)
    assert [r.duplicate for r in again if not isinstance(r, Exception)] == [True] * 4


def test_a_batch_that_conflicts_with_another_writer_is_redone_one_by_one(env_for) -> None:
    env = env_for()
    citizen = personal_number()
    other = Registry(Settings.from_env(env))
    other.handle(register_command(citizen))

    class Interleaved(Registry):
        def save(self, *objs, **kw):  # type: ignore[no-untyped-def]
            if len(objs) > 1 and not getattr(self, "raced", False):
                self.raced = True  # another process approves between our load and our save
                other.handle(approve_command(citizen))
            return super().save(*objs, **kw)

    registry = Interleaved(Settings.from_env(env))
    results = registry.handle_batch([approve_command(citizen), register_command()])
    assert isinstance(results[0], RuleViolationError)  # redone: it is already approved
    assert not isinstance(results[1], Exception) and not results[1].duplicate
    account = registry.account(citizen)
    assert account is not None and account.version == 2


def test_the_group_commit_writer_serves_many_threads(env_for) -> None:
    registry = Registry(Settings.from_env(env_for()))
    batcher = CommandBatcher(registry)
    commands = [register_command() for _ in range(200)]
    try:
        with ThreadPoolExecutor(16) as pool:
            outcomes = list(pool.map(batcher.submit, commands))
    finally:
        batcher.close()
    assert [o.duplicate for o in outcomes] == [False] * 200
    assert registry.recorder.max_notification_id() == 400
    second = CommandBatcher(registry)
    try:
        second.submit(approve_command(commands[0].citizen_id))
        with pytest.raises(RuleViolationError):  # a refusal reaches its caller
            second.submit(approve_command(commands[0].citizen_id))
    finally:
        second.close()
