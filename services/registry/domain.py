"""The citizen account aggregate: its events, its state machine and the rules it enforces."""

from __future__ import annotations

import hashlib
from typing import Any
from uuid import UUID, uuid5

import orjson
from eventsourcing.domain import Aggregate, event

from schemas import event_types as types
from schemas.chain import GENESIS, content_of, link_hash, utc_millis
from services.registry.transcoding import plain_json

# Account states (the registration and account lifecycle).
NONE = "none"
RECEIVED = "received"
APPROVED = "approved"
REJECTED = "rejected"
ACTIVATED = "activated"
LOCKED = "locked"
REVOKED = "revoked"

# Citizen statuses, orthogonal to the account state.
NORMAL = "normal"
DECEASED = "deceased"
EMIGRATED = "emigrated"
ABSENT = "absent"

# The one state machine of an account: (action, current state) -> next state.
ACCOUNT_TRANSITIONS: dict[tuple[str, str], str] = {
    ("register", NONE): RECEIVED,
    ("register", REJECTED): RECEIVED,  # a retake, e.g. unreadable fingerprints
    ("approve", RECEIVED): APPROVED,
    ("reject", RECEIVED): REJECTED,
    ("activate", APPROVED): ACTIVATED,
    ("lock", ACTIVATED): LOCKED,
    ("unlock", LOCKED): ACTIVATED,
    ("revoke", APPROVED): REVOKED,
    ("revoke", ACTIVATED): REVOKED,
    ("revoke", LOCKED): REVOKED,
}

# Citizen status changes: (status asked for, current citizen status) -> next citizen status.
CITIZEN_TRANSITIONS: dict[tuple[str, str], str] = {
    ("deceased", NORMAL): DECEASED,
    ("deceased", EMIGRATED): DECEASED,
    ("deceased", ABSENT): DECEASED,
    ("emigrated", NORMAL): EMIGRATED,
    ("emigrated", ABSENT): EMIGRATED,
    ("absent", NORMAL): ABSENT,
    ("returned", EMIGRATED): NORMAL,
    ("returned", ABSENT): NORMAL,
}

# Erasure rule (see README): the record of an account in use (activated or locked) is kept,
# since the identity it backs must stay verifiable; revoke it first. Every other state may be
# erased when the legal basis applies.
ERASURE_REFUSED = frozenset({ACTIVATED, LOCKED})

ACCOUNT_STATUS_ACTIONS = {"locked": "lock", "unlocked": "unlock", "revoked": "revoke"}
CITIZEN_STATUSES = {"deceased", "emigrated", "absent", "returned"}
STATUS_VALUES = frozenset(ACCOUNT_STATUS_ACTIONS) | CITIZEN_STATUSES


class RuleViolationError(Exception):
    """A command that the citizen's history does not allow."""

    def __init__(self, rule: str, message: str, state: dict[str, str]) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message
        self.state = state


def next_account_state(action: str, state: str, citizen_status: str) -> str:
    """The state after `action`, or RuleViolationError naming the rule that refuses it."""
    current = {"account_state": state, "citizen_status": citizen_status}
    if citizen_status == DECEASED:
        raise RuleViolationError("citizen_deceased", "the citizen is recorded as deceased", current)
    if state == REVOKED:
        raise RuleViolationError("account_revoked", "the account is revoked (final)", current)
    if action == "activate" and citizen_status in (EMIGRATED, ABSENT):
        raise RuleViolationError(
            "citizen_not_present",
            f"activation is blocked while the citizen is {citizen_status}",
            current,
        )
    try:
        return ACCOUNT_TRANSITIONS[(action, state)]
    except KeyError:
        rule = {
            "register": "one_open_registration",
            "activate": "activation_requires_approval",
        }.get(action, "invalid_transition")
        raise RuleViolationError(
            rule, f"cannot {action} an account in state {state}", current
        ) from None


def next_citizen_status(status: str, citizen_status: str, state: str) -> str:
    current = {"account_state": state, "citizen_status": citizen_status}
    try:
        return CITIZEN_TRANSITIONS[(status, citizen_status)]
    except KeyError:
        rule = "citizen_deceased" if citizen_status == DECEASED else "invalid_transition"
        raise RuleViolationError(
            rule, f"cannot record {status} for a citizen who is {citizen_status}", current
        ) from None


class Account(Aggregate):
    """One citizen's level-2 e-ID account; its id is the pseudonymous account id."""

    @event("RegistrationReceived")
    def __init__(
        self,
        sealed_citizen_id: str,
        registration: dict[str, Any],
        occurred_at: str,
        link: dict[str, str],
        actor: str = "",
    ) -> None:
        self.sealed_citizen_id = sealed_citizen_id  # personal fields are sealed (sealing.py)
        self.taken_by = actor  # the principal who took the registration (decides: never it)
        self.erased = False
        self.state = RECEIVED
        self.citizen_status = NORMAL
        self.attempts = 1
        self.last_hash = link["hash"]
        self._take(registration)

    def _take(self, registration: dict[str, Any]) -> None:
        self.registration = registration
        self.commune_code: str = registration["commune_code"]
        self.province_code: str = registration["province_code"]

    @classmethod
    def open(
        cls,
        account_id: UUID,
        sealed_citizen_id: str,
        registration: dict[str, Any],
        occurred_at: str,
        actor: str = "",
    ) -> Account:
        """A new account, under the id derived from the citizen's personal number."""
        payload = _registration_payload(registration, attempt=1)
        link = _link(
            GENESIS, account_id, 1, types.REGISTRATION_RECEIVED, occurred_at, registration, payload
        )
        return cls._create(
            cls.RegistrationReceived,  # type: ignore[attr-defined]
            id=account_id,
            sealed_citizen_id=sealed_citizen_id,
            registration=registration,
            occurred_at=occurred_at,
            link=link,
            actor=actor,
        )

    def _next_link(
        self, event_type: str, occurred_at: str, where: dict[str, Any], payload: dict[str, Any]
    ) -> dict[str, str]:
        return _link(
            self.last_hash, self.id, self.version + 1, event_type, occurred_at, where, payload
        )

    def snapshot_state(self) -> dict[str, str]:
        return {"account_state": self.state, "citizen_status": self.citizen_status}

    def subject(self) -> dict[str, str]:
        """Who and where: carried on every event so that readers need no lookups."""
        return {
            "sealed_citizen_id": self.sealed_citizen_id,
            "commune_code": self.commune_code,
            "province_code": self.province_code,
        }

    def register_again(
        self, registration: dict[str, Any], occurred_at: str, actor: str = ""
    ) -> None:
        next_account_state("register", self.state, self.citizen_status)
        subject = {
            "sealed_citizen_id": self.sealed_citizen_id,
            "commune_code": registration["commune_code"],
            "province_code": registration["province_code"],
        }
        attempt = self.attempts + 1
        payload = _registration_payload(registration, attempt)
        link = self._next_link(types.REGISTRATION_RECEIVED, occurred_at, registration, payload)
        self._registration_retaken(subject, registration, occurred_at, attempt, link, actor)

    @event("RegistrationRetaken")
    def _registration_retaken(
        self,
        subject: dict[str, str],
        registration: dict[str, Any],
        occurred_at: str,
        attempt: int,
        link: dict[str, str],
        actor: str = "",
    ) -> None:
        self.last_hash = link["hash"]
        self.state = RECEIVED
        self.taken_by = actor
        self.attempts = attempt
        self._take(registration)

    def decide(self, decision: str, sealed_reason: str, occurred_at: str, actor: str = "") -> None:
        action = "approve" if decision == "approved" else "reject"
        next_account_state(action, self.state, self.citizen_status)
        payload = {"decision": decision, "sealed_reason": sealed_reason}
        link = self._next_link(types.REGISTRATION_DECIDED, occurred_at, self.subject(), payload)
        self._registration_decided(
            self.subject(), decision, sealed_reason, occurred_at, link, actor
        )

    @event("RegistrationDecided")
    def _registration_decided(
        self,
        subject: dict[str, str],
        decision: str,
        sealed_reason: str,
        occurred_at: str,
        link: dict[str, str],
        actor: str = "",
    ) -> None:
        self.last_hash = link["hash"]
        self.state = APPROVED if decision == "approved" else REJECTED

    def activate(self, method: str, occurred_at: str, actor: str = "") -> None:
        next_account_state("activate", self.state, self.citizen_status)
        link = self._next_link(
            types.ACCOUNT_ACTIVATED, occurred_at, self.subject(), {"method": method}
        )
        self._account_activated(self.subject(), method, occurred_at, link, actor)

    @event("AccountActivated")
    def _account_activated(
        self,
        subject: dict[str, str],
        method: str,
        occurred_at: str,
        link: dict[str, str],
        actor: str = "",
    ) -> None:
        self.last_hash = link["hash"]
        self.state = ACTIVATED

    def change_status(
        self, status: str, sealed_reason: str, source: str, occurred_at: str, actor: str = ""
    ) -> None:
        if status in ACCOUNT_STATUS_ACTIONS:
            action = ACCOUNT_STATUS_ACTIONS[status]
            new_state = next_account_state(action, self.state, self.citizen_status)
            new_citizen_status = self.citizen_status
        elif status in CITIZEN_STATUSES:
            new_state = self.state
            new_citizen_status = next_citizen_status(status, self.citizen_status, self.state)
        else:
            raise ValueError(f"unknown status {status!r}")
        payload = {
            "status": status,
            "sealed_reason": sealed_reason,
            "source": source,
            "account_state": new_state,
            "citizen_status": new_citizen_status,
        }
        link = self._next_link(types.STATUS_CHANGED, occurred_at, self.subject(), payload)
        self._status_changed(
            self.subject(),
            status,
            sealed_reason,
            source,
            occurred_at,
            new_state,
            new_citizen_status,
            link,
            actor,
        )

    @event("StatusChanged")
    def _status_changed(
        self,
        subject: dict[str, str],
        status: str,
        sealed_reason: str,
        source: str,
        occurred_at: str,
        account_state: str,
        citizen_status: str,
        link: dict[str, str],
        actor: str = "",
    ) -> None:
        self.last_hash = link["hash"]
        self.state = account_state
        self.citizen_status = citizen_status

    def erase(self, legal_basis: str, reference: str, occurred_at: str, actor: str = "") -> bool:
        """Record that this citizen's personal data is erased (its data key is then destroyed);
        False if it already was. An account in use keeps its record: see ERASURE_REFUSED."""
        if self.erased:
            return False
        if self.state in ERASURE_REFUSED:
            raise RuleViolationError(
                "record_must_be_kept",
                f"personal data of an account that is {self.state} is kept while it is in use; "
                "revoke the account first",
                {"account_state": self.state, "citizen_status": self.citizen_status},
            )
        payload = {"legal_basis": legal_basis, "reference": reference}
        link = self._next_link(types.PERSONAL_DATA_ERASED, occurred_at, self.subject(), payload)
        self._personal_data_erased(self.subject(), legal_basis, reference, occurred_at, link, actor)
        return True

    @event("PersonalDataErased")
    def _personal_data_erased(
        self,
        subject: dict[str, str],
        legal_basis: str,
        reference: str,
        occurred_at: str,
        link: dict[str, str],
        actor: str = "",
    ) -> None:
        self.last_hash = link["hash"]
        self.erased = True

    def check_not_erased(self) -> None:
        if self.erased:
            raise RuleViolationError(
                "personal_data_erased",
                "this citizen's personal data was erased; the account takes no more commands",
                {"account_state": self.state, "citizen_status": self.citizen_status},
            )


def _registration_payload(registration: dict[str, Any], attempt: int) -> dict[str, Any]:
    """The public payload of a registration (the place travels beside it, not in it)."""
    payload = {k: v for k, v in registration.items() if k not in ("commune_code", "province_code")}
    return {**payload, "attempt": attempt}


def _link(
    previous: str, account_id: UUID, sequence: int, event_type: str, occurred_at: str,
    where: dict[str, Any], payload: dict[str, Any],
) -> dict[str, str]:  # fmt: skip
    content = content_of(
        str(account_id),
        sequence,
        event_type,
        occurred_at,
        where["province_code"],
        where["commune_code"],
        payload,
    )
    return {"previous_hash": previous, "hash": _link_hash(previous, content)}


def _link_hash(previous: str, content: dict[str, Any]) -> str:
    """`schemas.chain.link_hash(previous, content)`, the canonical JSON written by orjson when
    that gives the same bytes (`plain_json`: ~5 us less an event), else by link_hash itself."""
    canonical = {**content, "occurred_at": utc_millis(content["occurred_at"])}
    if plain_json(canonical):
        try:
            text = orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:  # an int beyond 64 bits, a lone surrogate, ...
            return link_hash(previous, content)
        return hashlib.sha256(previous.encode() + b"\n" + text).hexdigest()
    return link_hash(previous, content)


class CommandReceipt(Aggregate):
    """Proof that a client command was applied once, with the result it got."""

    @event("CommandApplied")
    def __init__(self, digest: str, result: dict[str, Any]) -> None:
        self.digest = digest
        self.result = result

    @classmethod
    def record(cls, receipt_id: UUID, digest: str, result: dict[str, Any]) -> CommandReceipt:
        return cls._create(
            cls.CommandApplied,  # type: ignore[attr-defined]
            id=receipt_id,
            digest=digest,
            result=result,
        )


TARGET_NAMESPACE = UUID("3e9b7c1a-52d4-5f0b-8a61-7c2d9e4f1b38")


class CommuneTarget(Aggregate):
    """A commune's target (chỉ tiêu) for one metric (received or activated) and its deadline."""

    @event("TargetSet")
    def __init__(
        self, commune_code: str, province_code: str, metric: str, target: int, deadline: str
    ) -> None:
        self.commune_code = commune_code
        self.province_code = province_code
        self.metric = metric
        self.target = target
        self.deadline = deadline

    @staticmethod
    def id_for(commune_code: str, metric: str) -> UUID:
        return uuid5(TARGET_NAMESPACE, f"{commune_code}/{metric}")

    @classmethod
    def set(
        cls, commune_code: str, province_code: str, metric: str, target: int, deadline: str
    ) -> CommuneTarget:
        return cls._create(
            cls.TargetSet,  # type: ignore[attr-defined]
            id=cls.id_for(commune_code, metric),
            commune_code=commune_code,
            province_code=province_code,
            metric=metric,
            target=target,
            deadline=deadline,
        )

    @event("TargetRevised")
    def revise(self, target: int, deadline: str) -> None:
        self.target = target
        self.deadline = deadline


class AccessRecord(Aggregate):
    """One read of a citizen's history or state by an authorised person (Decree 13/2023)."""

    @event("HistoryRead")
    def __init__(
        self,
        account_id: str,
        subject: dict[str, str],
        actor: str,
        role: str,
        purpose: str,
        scope: str,
        occurred_at: str,
    ) -> None:
        self.account_id = account_id
        self.actor = actor
        self.purpose = purpose
        self.scope = scope
