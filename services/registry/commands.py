"""Commands a station, device or registry clerk sends; each knows how to apply itself."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar
from uuid import UUID

import orjson

from services.registry.domain import Account, CommuneTarget
from services.registry.identity import event_id

Seal = Callable[[str], str]  # seals one personal field for the command's account
PERSONAL = ("full_name", "date_of_birth", "sex")  # registration fields sealed per citizen
SENDER = ("actor", "scope_communes", "scope_province")  # who sent a command, not what it asks
# Values `dataclasses.asdict` would leave as they are (it deep-copies the rest): exact types,
# so that a subclass (an enum, say) takes the general path.
_PLAIN = frozenset({str, int, float, bool, type(None)})


_NAMES: dict[tuple[type, tuple[str, ...]], tuple[str, ...]] = {}


def _field_names(cls: type, left_out: tuple[str, ...]) -> tuple[str, ...]:
    """The names of `cls`'s fields, in their order, but those `left_out` (kept per class)."""
    names = _NAMES.get((cls, left_out))
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(cls) if f.name not in left_out)
        _NAMES[(cls, left_out)] = names
    return names


def _plain_fields(command: Any, left_out: tuple[str, ...]) -> dict[str, Any]:
    """`dataclasses.asdict(command)` without the fields `left_out`: the same dict (keys in the
    same order, equal values), read straight from the fields when every value is a plain
    scalar (asdict's recursive deep copy is most of its cost); else from asdict itself."""
    names = _field_names(type(command), left_out)
    body = {name: getattr(command, name) for name in names}
    if all(type(value) in _PLAIN for value in body.values()):
        return body
    full = dataclasses.asdict(command)
    return {name: full[name] for name in names}


class AccountNotFoundError(LookupError):
    """The command needs an account this citizen does not have."""


class ScopeError(PermissionError):
    """The principal who sent the command may not do it to this account (its commune is
    outside the principal's scope, or it is a decision on a registration it took)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Command:
    """A request to change one aggregate; subclasses say which and how."""

    kind: ClassVar[str] = ""
    undigested: ClassVar[tuple[str, ...]] = ()  # fields a resend may leave to their default
    command_id: str
    # Who sent it (the authenticated principal's id, recorded on the event) and the communes
    # and province it may act on (empty: any). Not part of what is asked: a resend by another
    # principal of the same request is the same request.
    actor: str = field(default="", kw_only=True)
    scope_communes: tuple[str, ...] = field(default=(), kw_only=True)
    scope_province: str = field(default="", kw_only=True)

    def digest(self, key: bytes) -> str:
        """A keyed fingerprint of what the command asks, to tell a resend from a reused id
        (keyed: a plain hash of personal fields could be reversed by guessing them)."""
        body = _plain_fields(self, ("command_id", *SENDER, *self.undigested))
        body["kind"] = self.kind
        canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        return hmac.new(key, canonical, hashlib.sha256).hexdigest()

    def apply(self, aggregate: Any, aggregate_id: UUID, seal: Seal) -> Any:
        """The aggregate (None if it does not exist yet) with the command's new event pending;
        a domain error if the aggregate's history refuses it. `seal` seals a personal field
        for this aggregate: no clear personal value enters an event."""
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
    refused_once_erased: ClassVar[bool] = True  # an erased account takes no more commands

    def apply(self, aggregate: Account | None, aggregate_id: UUID, seal: Seal) -> Account:
        if aggregate is None:
            raise AccountNotFoundError("no registration is recorded for this citizen")
        if self.refused_once_erased:
            aggregate.check_not_erased()
        self.check_scope(aggregate.commune_code, aggregate.province_code)
        self.record_on(aggregate, seal)
        return aggregate

    def check_scope(self, commune_code: str, province_code: str) -> None:
        inside = not self.scope_communes or commune_code in self.scope_communes
        if not inside or self.scope_province not in ("", province_code):
            raise ScopeError("out_of_scope", "the account's commune is outside your scope")

    def record_on(self, account: Account, seal: Seal) -> None:
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

    def registration(self, seal: Seal) -> dict[str, Any]:
        """Where, with what and by whom in clear; who (name, birth date, sex) sealed."""
        body = _plain_fields(self, ("command_id", "citizen_id", "captured_at", *SENDER, *PERSONAL))
        return {**{f"sealed_{name}": seal(getattr(self, name)) for name in PERSONAL}, **body}

    def apply(self, aggregate: Account | None, aggregate_id: UUID, seal: Seal) -> Account:
        if aggregate is None:
            return Account.open(
                account_id=aggregate_id,
                sealed_citizen_id=seal(self.citizen_id),
                registration=self.registration(seal),
                occurred_at=self.captured_at,
                actor=self.actor,
            )
        aggregate.check_not_erased()
        aggregate.register_again(self.registration(seal), self.captured_at, self.actor)
        return aggregate


@dataclass(frozen=True)
class DecideRegistration(AccountCommand):
    kind: ClassVar[str] = "decision"
    decision: str
    reason: str
    decided_at: str

    def record_on(self, account: Account, seal: Seal) -> None:
        # Whoever took it: the principal that sent it, or the operator it names.
        if self.actor and self.actor in (account.taken_by, account.registration["operator_id"]):
            raise ScopeError("own_registration", "a registration is decided by someone else")
        account.decide(self.decision, seal(self.reason), self.decided_at, self.actor)


@dataclass(frozen=True)
class ActivateAccount(AccountCommand):
    kind: ClassVar[str] = "activation"
    method: str
    activated_at: str

    def record_on(self, account: Account, seal: Seal) -> None:
        account.activate(self.method, self.activated_at, self.actor)


@dataclass(frozen=True)
class ChangeStatus(AccountCommand):
    kind: ClassVar[str] = "status_change"
    status: str
    reason: str
    source: str
    effective_at: str

    def record_on(self, account: Account, seal: Seal) -> None:
        account.change_status(
            self.status, seal(self.reason), self.source, self.effective_at, self.actor
        )


@dataclass(frozen=True)
class EraseCitizen(AccountCommand):
    """Erase the citizen's personal data (crypto-shredding), for a stated legal basis."""

    kind: ClassVar[str] = "erasure"
    refused_once_erased: ClassVar[bool] = False  # a second erasure is a no-op
    undigested: ClassVar[tuple[str, ...]] = ("requested_at",)  # "now" unless stated
    legal_basis: str
    reference: str
    requested_at: str

    def record_on(self, account: Account, seal: Seal) -> None:
        account.erase(self.legal_basis, self.reference, self.requested_at, self.actor)

    def result(self, aggregate: Account) -> dict[str, Any]:
        return {**super().result(aggregate), "erased": True}


@dataclass(frozen=True)
class SetTarget(Command):
    """A commune's target for one metric and deadline; the latest one set wins."""

    kind: ClassVar[str] = "target"
    commune_code: str
    province_code: str
    metric: str
    target: int
    deadline: str

    def apply(
        self, aggregate: CommuneTarget | None, aggregate_id: UUID, seal: Seal
    ) -> CommuneTarget:
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
