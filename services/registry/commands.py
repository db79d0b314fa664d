"""Commands a station, device or registry clerk sends; each knows how to apply itself."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar
from uuid import UUID

import orjson

from services.registry.domain import Account


class AccountNotFoundError(LookupError):
    """The command needs an account this citizen does not have."""


@dataclass(frozen=True)
class Command:
    kind: ClassVar[str] = ""
    command_id: str
    citizen_id: str

    def digest(self) -> str:
        """A fingerprint of what the command asks, to tell a resend from a reused id."""
        body = dataclasses.asdict(self)
        body.pop("command_id")
        body["kind"] = self.kind
        return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()

    def apply(self, account: Account | None, account_id: UUID) -> Account:
        if account is None:
            raise AccountNotFoundError("no registration is recorded for this citizen")
        self.apply_to(account)
        return account

    def apply_to(self, account: Account) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class RegisterCitizen(Command):
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

    def apply(self, account: Account | None, account_id: UUID) -> Account:
        if account is None:
            return Account.open(
                account_id=account_id,
                citizen_id=self.citizen_id,
                registration=self.registration(),
                occurred_at=self.captured_at,
            )
        account.register_again(self.registration(), self.captured_at)
        return account


@dataclass(frozen=True)
class DecideRegistration(Command):
    kind: ClassVar[str] = "decision"
    decision: str
    reason: str
    decided_at: str

    def apply_to(self, account: Account) -> None:
        account.decide(self.decision, self.reason, self.decided_at)


@dataclass(frozen=True)
class ActivateAccount(Command):
    kind: ClassVar[str] = "activation"
    method: str
    activated_at: str

    def apply_to(self, account: Account) -> None:
        account.activate(self.method, self.activated_at)


@dataclass(frozen=True)
class ChangeStatus(Command):
    kind: ClassVar[str] = "status_change"
    status: str
    reason: str
    source: str
    effective_at: str

    def apply_to(self, account: Account) -> None:
        account.change_status(self.status, self.reason, self.source, self.effective_at)
