"""The registry application: applies commands once each, on the event store the settings pick."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError

from services.registry.commands import Command
from services.registry.domain import AccessRecord, Account, CommandReceipt, CommuneTarget
from services.registry.identity import account_id, command_uuid
from services.settings import Settings

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8


class CommandReuseError(Exception):
    """A command_id already used for a command with a different payload."""


class ConcurrencyError(Exception):
    """The citizen's history kept changing under the command; the client may retry."""


@dataclass(frozen=True)
class Outcome:
    body: dict[str, Any]
    duplicate: bool = False

    def as_dict(self) -> dict[str, Any]:
        return self.body


class Registry(Application[UUID]):
    """Write side of the backbone. Events of `Account` are the public stream."""

    name = "registry"

    def __init__(self, settings: Settings) -> None:
        self._secret = settings.pseudonym_secret
        super().__init__(env=settings.eventsourcing_env())

    def account_id(self, citizen_id: str) -> UUID:
        return account_id(citizen_id, self._secret)

    def account(self, citizen_id: str) -> Account | None:
        return self._get(self.account_id(citizen_id))  # type: ignore[no-any-return]

    def submit(self, command: Command) -> Outcome:
        """Apply `command` unless already applied; a resend gets the first outcome back."""
        receipt_id = command_uuid(command.command_id)
        digest = command.digest()
        for _ in range(MAX_ATTEMPTS):
            earlier = self._receipt(receipt_id)
            if earlier is not None:
                if earlier.digest != digest:
                    raise CommandReuseError("command_id was already used for another command")
                return Outcome(earlier.result, duplicate=True)
            agg_id = command.aggregate_id(self._secret)
            aggregate = command.apply(self._get(agg_id), agg_id)
            outcome = Outcome(command.result(aggregate))
            receipt = CommandReceipt.record(receipt_id, digest, outcome.body)
            try:
                self.save(aggregate, receipt)
            except IntegrityError:
                log.info("conflict on command %s, retrying", command.command_id)
                continue
            return outcome
        raise ConcurrencyError("the account changed concurrently too many times")

    def _receipt(self, receipt_id: UUID) -> CommandReceipt | None:
        return self._get(receipt_id)  # type: ignore[no-any-return]

    def _get(self, aggregate_id: UUID) -> Any:
        try:
            return self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None

    def target(self, commune_code: str, metric: str) -> CommuneTarget | None:
        return self._get(CommuneTarget.id_for(commune_code, metric))  # type: ignore[no-any-return]

    def record_access(
        self, account: Account, actor: str, role: str, purpose: str, scope: str
    ) -> AccessRecord:
        """Record that `actor` read this account's `scope` (history or state), and why."""
        record = AccessRecord(
            account_id=str(account.id),
            subject={"commune_code": account.commune_code, "province_code": account.province_code},
            actor=actor, role=role, purpose=purpose, scope=scope,
            occurred_at=datetime.now(UTC).isoformat(),
        )  # fmt: skip
        self.save(record)
        return record

    def account_as_of(self, citizen_id: str, as_of: datetime) -> Account | None:
        """The account as the registry knew it at `as_of` (events recorded up to then)."""
        acc_id = self.account_id(citizen_id)
        version = None
        for stored in self.events.get(acc_id):
            if stored.timestamp > as_of:  # type: ignore[attr-defined]
                break
            version = stored.originator_version
        if version is None:
            return None
        return self.repository.get(acc_id, version=version)  # type: ignore[no-any-return]
