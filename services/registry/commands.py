"""Commands a station, device or registry clerk sends; each knows how to apply itself."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar
from uuid import UUID

import orjson

from services.registry.domain import Account, CommuneTarget
from services.registry.identity import event_id


class AccountNotFoundError(LookupError):
    """The command needs an account this citizen does not have."""


@dataclass(frozen=True)
class Command:
    """A request to change one aggregate; subclasses say which and how."""

    kind: ClassVar[str] = ""
    command_id: str

    def digest(self) -> str:
        """A fingerprint of what the command asks, to tell a resend from a reused id."""
        body = dataclasses.asdict(self)
        body.pop("command_id")
        body["kind"] = self.kind
        return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()

    def apply(self, aggregate: Any, aggregate_id: UUID) -> Any:
        """The aggregate (None if it does not exist yet) with the command's new event pending;
        a domain error if the aggregate's history refuses it."""
        raise NotImplementedError

    def result(self, aggregate: Any) -> dict[str, Any]:
        """What the client gets back (and gets again for a resend)."""
        return {
            "event_id": str(event_id(aggregate.id, aggregate.version)),
            "version": aggregate.version,
        }


@dataclass(frozen=True)
class AccountCommand(Command):
    """A command on one citizen's account, found by the pseudonym of the personal number."""

    citizen_id: str

    def apply(self, aggregate: Account | None, aggregate_id: UUID) -> Account:
        if aggregate is None:
            raise AccountNotFoundError("no registration is recorded for this citizen")
        self.record_on(aggregate)
        return aggregate

    def record_on(self, account: Account) -> None:
        """Record the command's event on an existing account."""
        raise NotImplementedError

    def result(self, aggregate: Account) -> dict[str, Any]:
        return {
            "account_id": str(aggregate.id),
            **super().result(aggregate),
            **aggregate.snapshot_state(),
        }


@dataclass(frozen=True)
class RegisterCitizen(AccountCommand):
    kind: ClassVar[str] = "registration"
    full_name: str
    date_of_birth: str
    sex: str
    commune_code: str
    province_code: str
    station_id: str
    device_id: str
    operator_id: str
    channel: str
    phone: str
    captured_at: str

    def registration(self) -> dict[str, Any]:
        body = dataclasses.asdict(self)
        for name in ("command_id", "citizen_id", "captured_at"):
            body.pop(name)
        return body

    def apply(self, aggregate: Account | None, aggregate_id: UUID) -> Account:
        if aggregate is None:
            return Account.open(
                account_id=aggregate_id,
                citizen_id=self.citizen_id,
                registration=self.registration(),
                occurred_at=self.captured_at,
            )
        aggregate.register_again(self.registration(), self.captured_at)
        return aggregate


@dataclass(frozen=True)
class DecideRegistration(AccountCommand):
    kind: ClassVar[str] = "decision"
    decision: str
    reason: str
    decided_at: str

    def record_on(self, account: Account) -> None:
        account.decide(self.decision, self.reason, self.decided_at)


@dataclass(frozen=True)
class ActivateAccount(AccountCommand):
    kind: ClassVar[str] = "activation"
    method: str
    activated_at: str

    def record_on(self, account: Account) -> None:
        account.activate(self.method, self.activated_at)


@dataclass(frozen=True)
class ChangeStatus(AccountCommand):
    kind: ClassVar[str] = "status_change"
    status: str
    reason: str
    source: str
    effective_at: str

    def record_on(self, account: Account) -> None:
        account.change_status(self.status, self.reason, self.source, self.effective_at)


@dataclass(frozen=True)
class SetTarget(Command):
    """A commune's target for one metric and deadline; the latest one set wins."""

    kind: ClassVar[str] = "target"
    commune_code: str
    province_code: str
    metric: str
    target: int
    deadline: str

    def apply(self, aggregate: CommuneTarget | None, aggregate_id: UUID) -> CommuneTarget:
        if aggregate is None:
            return CommuneTarget.set(
                self.commune_code, self.province_code, self.metric, self.target, self.deadline
            )
        aggregate.revise(self.target, self.deadline)
        return aggregate

    def result(self, aggregate: CommuneTarget) -> dict[str, Any]:
        return {
            **super().result(aggregate),
            "commune_code": self.commune_code,
            "metric": self.metric,
            "target": aggregate.target,
            "deadline": aggregate.deadline,
        }
