"""The account aggregate and its state machine, without I/O."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.registry.domain import (
    ACCOUNT_TRANSITIONS,
    ACTIVATED,
    APPROVED,
    DECEASED,
    LOCKED,
    RECEIVED,
    REJECTED,
    REVOKED,
    Account,
    RuleViolationError,
)

REG = {
    "full_name": "Nguyễn Văn A", "date_of_birth": "1990-05-01", "sex": "male",
    "commune_code": "22420", "province_code": "56", "station_id": "st-1", "device_id": "dev-1",
    "operator_id": "op-1", "channel": "station", "phone": "smart",
}  # fmt: skip
T = "2023-06-27T09:00:00+07:00"


def new_account() -> Account:
    return Account.open(uuid.uuid4(), "056090001234", REG, T)


def test_new_registration_is_received() -> None:
    assert new_account().state == RECEIVED


def test_activation_before_approval_is_refused_with_the_rule() -> None:
    account = new_account()
    with pytest.raises(RuleViolationError) as err:
        account.activate("vneid_app", T)
    assert err.value.rule == "activation_requires_approval"
    assert err.value.state == {"account_state": RECEIVED, "citizen_status": "normal"}


def test_approved_account_activates() -> None:
    account = new_account()
    account.decide("approved", "", T)
    account.activate("assisted", T)
    assert account.state == ACTIVATED
    assert account.version == 3


def test_second_open_registration_is_refused() -> None:
    account = new_account()
    with pytest.raises(RuleViolationError) as err:
        account.register_again(REG, T)
    assert err.value.rule == "one_open_registration"


def test_rejected_registration_may_be_retaken() -> None:
    account = new_account()
    account.decide("rejected", "fingerprints unreadable", T)
    account.register_again(REG, T)
    assert (account.state, account.attempts) == (RECEIVED, 2)


def test_deceased_citizen_cannot_be_activated() -> None:
    account = new_account()
    account.decide("approved", "", T)
    account.change_status("deceased", "death record", "civil_registry", T)
    with pytest.raises(RuleViolationError) as err:
        account.activate("assisted", T)
    assert err.value.rule == "citizen_deceased"


def test_absent_citizen_activates_only_after_return() -> None:
    account = new_account()
    account.decide("approved", "", T)
    account.change_status("absent", "works far away", "commune_police", T)
    with pytest.raises(RuleViolationError):
        account.activate("assisted", T)
    account.change_status("returned", "", "commune_police", T)
    account.activate("assisted", T)
    assert account.state == ACTIVATED


def test_revoked_is_final() -> None:
    account = new_account()
    account.decide("approved", "", T)
    account.change_status("revoked", "fraud", "ministry", T)
    for attempt in (
        lambda: account.change_status("unlocked", "", "x", T),
        lambda: account.activate("assisted", T),
    ):
        with pytest.raises(RuleViolationError) as err:
            attempt()
        assert err.value.rule == "account_revoked"
    assert account.state == REVOKED


def test_lock_and_unlock_an_active_account() -> None:
    account = new_account()
    account.decide("approved", "", T)
    account.activate("vneid_app", T)
    account.change_status("locked", "lost phone", "citizen", T)
    assert account.state == LOCKED
    account.change_status("unlocked", "", "citizen", T)
    assert account.state == ACTIVATED


ACTIONS = st.sampled_from([
    ("register", None), ("decide", "approved"), ("decide", "rejected"), ("activate", None),
    ("status", "locked"), ("status", "unlocked"), ("status", "revoked"), ("status", "deceased"),
    ("status", "emigrated"), ("status", "absent"), ("status", "returned"),
])  # fmt: skip


def _apply(account: Account, action: tuple[str, str | None]) -> None:
    kind, arg = action
    if kind == "register":
        account.register_again(REG, T)
    elif kind == "decide":
        account.decide(arg or "", "", T)
    elif kind == "activate":
        account.activate("assisted", T)
    else:
        account.change_status(arg or "", "", "test", T)


@settings(max_examples=300, deadline=None)
@given(st.lists(ACTIONS, max_size=25))
def test_random_commands_never_reach_a_forbidden_state_and_replay_rebuilds_it(actions) -> None:
    account = new_account()
    reachable = {to for to in ACCOUNT_TRANSITIONS.values()} | {RECEIVED}
    for action in actions:
        before = (account.state, account.citizen_status, account.version)
        try:
            _apply(account, action)
        except RuleViolationError:
            assert (account.state, account.citizen_status, account.version) == before
            continue
        assert account.state in reachable
        if before[1] == DECEASED:
            pytest.fail("a command was applied to a deceased citizen")
        if account.state == ACTIVATED and before[0] not in (APPROVED, ACTIVATED, LOCKED):
            pytest.fail(f"activated from {before[0]}")
    # Replaying the recorded events rebuilds the same state.
    events = account.collect_events()
    replayed = None
    for event in events:
        replayed = event.mutate(replayed)
    assert replayed is not None
    assert (replayed.state, replayed.citizen_status, replayed.version) == (
        account.state,
        account.citizen_status,
        account.version,
    )
    assert account.state != REJECTED or replayed.attempts == account.attempts
