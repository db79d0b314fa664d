"""A batch reads its accounts and receipts in one go: the same results as one command at a time."""

from __future__ import annotations

import uuid
from typing import Any

from services.registry.application import READ_CHUNK, Outcome, Registry
from services.registry.commands import ActivateAccount, Command, RegisterCitizen
from services.settings import Settings
from tests.support.factories import approve_command, personal_number, register_command


def activate(citizen_id: str) -> ActivateAccount:
    return ActivateAccount(
        command_id=f"act-{uuid.uuid4()}",
        citizen_id=citizen_id,
        method="assisted",
        activated_at="2023-06-27T11:00:00+07:00",
    )


def shape(result: Outcome | Exception) -> Any:
    """What a result says, without the ids that differ from one citizen to another."""
    if isinstance(result, Exception):
        return type(result).__name__
    body = result.as_dict()
    return result.duplicate, body["version"], body.get("account_state")


def commands_on(registry: Registry) -> tuple[list[Command], list[str]]:
    """Stored citizens (three) and a run of commands on them, one new citizen, and refusals."""
    stored = [register_command() for _ in range(3)]
    assert not any(isinstance(r, Exception) for r in registry.handle_batch(list(stored)))
    c0, c1, c2 = (c.citizen_id for c in stored)
    new = personal_number()
    run: list[Command] = [
        activate(c0),  # refused: not approved yet
        approve_command(c0),
        activate(c0),  # sees the approval just before
        approve_command(c1),
        approve_command(c1),  # refused: already approved
        stored[2],  # a resend of a stored command
        RegisterCitizen(**{**stored[1].__dict__, "phone": "none"}),  # its id, another body
        activate(personal_number()),  # no such account
        register_command(new),
        approve_command(new),
        activate(new),
        activate(c0),  # refused: already active
    ]
    return run, [c0, c1, c2, new]


def test_a_batch_on_stored_accounts_gives_what_one_by_one_gives(env_for) -> None:
    registry = Registry(Settings.from_env(env_for()))
    batch, batch_citizens = commands_on(registry)
    single, single_citizens = commands_on(registry)
    batched = [shape(r) for r in registry.handle_batch(batch)]
    one_by_one = [shape(registry._handle_or_error(c)) for c in single]
    assert batched == one_by_one
    assert batched == [
        "RuleViolationError",
        (False, 2, "approved"),
        (False, 3, "activated"),
        (False, 2, "approved"),
        "RuleViolationError",
        (True, 1, "received"),
        "CommandReuseError",
        "AccountNotFoundError",
        (False, 1, "received"),
        (False, 2, "approved"),
        (False, 3, "activated"),
        "RuleViolationError",
    ]
    for one, other in zip(batch_citizens, single_citizens, strict=True):
        a, b = registry.account(one), registry.account(other)
        assert a is not None and b is not None
        assert (a.version, a.state) == (b.version, b.state)
    # and again, all stored now: the same answers
    assert [shape(r) for r in registry.handle_batch(batch)] == [
        shape(registry._handle_or_error(c)) for c in batch
    ]


def test_a_batch_larger_than_one_read_sees_every_stored_account(env_for) -> None:
    registry = Registry(Settings.from_env(env_for()))
    count = READ_CHUNK + READ_CHUNK // 2 + 1
    registrations = [register_command() for _ in range(count)]
    assert not any(isinstance(r, Exception) for r in registry.handle_batch(list(registrations)))
    approvals = [approve_command(r.citizen_id) for r in registrations]
    results = registry.handle_batch([*registrations, *approvals])
    assert [shape(r) for r in results] == [(True, 1, "received")] * count + [
        (False, 2, "approved")
    ] * count
    last = registry.account(registrations[-1].citizen_id)
    assert last is not None and last.version == 2


def test_a_whole_device_backlog_is_stored_in_order_on_either_store(settings: Settings) -> None:
    """The largest sync (5,000 registrations, over 10,000 events) hung on PostgreSQL in one
    transaction; it is stored in transactions of MAX_TRANSACTION commands, in order."""
    from services.api.sync import MAX_COMMANDS
    from services.registry.application import MAX_TRANSACTION

    registry = Registry(settings)
    try:
        backlog = [register_command() for _ in range(MAX_COMMANDS)]
        assert len(backlog) > MAX_TRANSACTION
        before = registry.recorder.max_notification_id() or 0
        results = registry.handle_batch(list(backlog))
        assert not [r for r in results if isinstance(r, Exception)]
        assert [r.as_dict()["version"] for r in results] == [1] * MAX_COMMANDS  # type: ignore[union-attr]
        assert (registry.recorder.max_notification_id() or 0) > before
        again = registry.handle_batch(list(backlog))  # the device resends it: first outcomes
        assert all(not isinstance(r, Exception) and r.duplicate for r in again)
        stored = [registry.account(c.citizen_id) for c in backlog[:: MAX_TRANSACTION // 2]]
        assert all(account is not None for account in stored)
    finally:
        registry.close()
