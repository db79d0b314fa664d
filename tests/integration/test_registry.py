"""The registry on its real SQLite event store: concurrency, restarts, reconciliation."""

from __future__ import annotations

import threading
import uuid

import pytest

from services.registry.application import CommandReuseError, Registry
from services.registry.commands import ActivateAccount, ChangeStatus, DecideRegistration
from services.registry.domain import RuleViolationError
from services.registry.reconcile import reconcile
from services.settings import Settings
from tests.factories import approve_command, personal_number, register_command


def test_concurrent_commands_on_one_citizen_never_both_apply(env_for) -> None:
    settings = Settings.from_env(env_for())
    registry = Registry(settings)
    citizen = personal_number()
    registry.submit(register_command(citizen))
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
            wins.append(registry.submit(command))
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
    first.submit(register_command(citizen))
    first.submit(approve_command(citizen))
    stale = second.account(citizen)  # both now load version 2
    first.submit(
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
    outcome = second.submit(lock)  # reloads, sees the activation, applies on top
    assert outcome.as_dict()["version"] == 4
    assert outcome.as_dict()["account_state"] == "locked"


def test_idempotency_survives_a_restart(env_for) -> None:
    env = env_for()
    command = register_command()
    first = Registry(Settings.from_env(env)).submit(command)
    restarted = Registry(Settings.from_env(env))
    again = restarted.submit(command)
    assert again.duplicate and again.as_dict() == first.as_dict()
    with pytest.raises(CommandReuseError):
        restarted.submit(
            register_command(command.citizen_id).__class__(**{**command.__dict__, "phone": "none"})
        )


CSV_HEADER = "personal_number,date_of_death,registry_reference\n"


def test_death_records_are_reconciled_once(env_for) -> None:
    registry = Registry(Settings.from_env(env_for()))
    known, other = personal_number(), personal_number()
    registry.submit(register_command(known))
    registry.submit(register_command(other))
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
