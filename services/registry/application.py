"""The registry application: applies commands once each, on the event store the settings pick."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError

from services.registry.commands import Command
from services.registry.domain import Account, CommandReceipt
from services.registry.identity import account_id, command_uuid, event_id
from services.settings import Settings

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8


class CommandReuseError(Exception):
    """A command_id already used for a command with a different payload."""


class ConcurrencyError(Exception):
    """The citizen's history kept changing under the command; the client may retry."""


@dataclass(frozen=True)
class Outcome:
    account_id: str
    event_id: str
    version: int
    state: str
    citizen_status: str
    duplicate: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "event_id": self.event_id,
            "version": self.version,
            "state": self.state,
            "citizen_status": self.citizen_status,
        }


class Registry(Application[UUID]):
    """Write side of the backbone. Events of `Account` are the public stream."""

    name = "registry"

    def __init__(self, settings: Settings) -> None:
        self._secret = settings.pseudonym_secret
        super().__init__(env=settings.eventsourcing_env())

    def account_id(self, citizen_id: str) -> UUID:
        return account_id(citizen_id, self._secret)

    def account(self, citizen_id: str, version: int | None = None) -> Account | None:
        try:
            return self.repository.get(self.account_id(citizen_id), version=version)
        except AggregateNotFoundError:
            return None

    def submit(self, command: Command) -> Outcome:
        """Apply `command` unless already applied; a resend gets the first outcome back."""
        receipt_id = command_uuid(command.command_id)
        digest = command.digest()
        for _ in range(MAX_ATTEMPTS):
            earlier = self._receipt(receipt_id)
            if earlier is not None:
                if earlier.digest != digest:
                    raise CommandReuseError("command_id was already used for another command")
                return Outcome(**earlier.result, duplicate=True)
            acc_id = self.account_id(command.citizen_id)
            account = command.apply(self._get_account(acc_id), acc_id)
            outcome = Outcome(
                account_id=str(acc_id),
                event_id=str(event_id(acc_id, account.version)),
                version=account.version,
                state=account.state,
                citizen_status=account.citizen_status,
            )
            receipt = CommandReceipt.record(receipt_id, digest, outcome.as_dict())
            try:
                self.save(account, receipt)
            except IntegrityError:
                log.info("conflict on command %s, retrying", command.command_id)
                continue
            return outcome
        raise ConcurrencyError("the account changed concurrently too many times")

    def _receipt(self, receipt_id: UUID) -> CommandReceipt | None:
        try:
            return self.repository.get(receipt_id)
        except AggregateNotFoundError:
            return None

    def _get_account(self, acc_id: UUID) -> Account | None:
        try:
            return self.repository.get(acc_id)
        except AggregateNotFoundError:
            return None
