"""The registry application: applies commands once each, on the event store the settings pick."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError

from services.registry.commands import AccountNotFoundError, Command
from services.registry.domain import (
    AccessRecord,
    Account,
    CommandReceipt,
    CommuneTarget,
    RuleViolationError,
)
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


# What a command may be refused with; anything else is a fault.
REFUSALS: tuple[type[Exception], ...] = (RuleViolationError, AccountNotFoundError,
                                         CommandReuseError)  # fmt: skip


REFUSALS_OR_CONFLICT: tuple[type[Exception], ...] = (*REFUSALS, ConcurrencyError)


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

    def submit_many(self, commands: list[Command]) -> list[Outcome | Exception]:
        """Apply commands in order in one transaction (group commit); one result each.

        A refused command gets its exception in its place and changes nothing. Commands on
        the same aggregate see each other's effects, as they would one by one. If another
        writer got in between, the batch is redone one command at a time.
        """
        working: dict[UUID, Any] = {}
        receipts: dict[UUID, CommandReceipt] = {}
        results: list[Outcome | Exception] = []
        for command in commands:
            try:
                results.append(self._apply_in_batch(command, working, receipts))
            except REFUSALS as exc:
                results.append(exc)
        if not receipts:
            return results
        try:
            self.save(*working.values(), *receipts.values())
        except IntegrityError:
            log.info("batch of %d conflicted, applying one by one", len(commands))
            return [self._submit_or_error(command) for command in commands]
        return results

    def _apply_in_batch(
        self, command: Command, working: dict[UUID, Any], receipts: dict[UUID, CommandReceipt]
    ) -> Outcome:
        receipt_id = command_uuid(command.command_id)
        digest = command.digest()
        earlier = receipts.get(receipt_id) or self._receipt(receipt_id)
        if earlier is not None:
            if earlier.digest != digest:
                raise CommandReuseError("command_id was already used for another command")
            return Outcome(earlier.result, duplicate=True)
        agg_id = command.aggregate_id(self._secret)
        current = working[agg_id] if agg_id in working else self._get(agg_id)
        aggregate = command.apply(current, agg_id)
        working[agg_id] = aggregate
        outcome = Outcome(command.result(aggregate))
        receipts[receipt_id] = CommandReceipt.record(receipt_id, digest, outcome.body)
        return outcome

    def _submit_or_error(self, command: Command) -> Outcome | Exception:
        try:
            return self.submit(command)
        except REFUSALS_OR_CONFLICT as exc:
            return exc

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
