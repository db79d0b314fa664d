"""The registry application: applies commands once each, on the event store the settings pick."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    ProcessingEvent,
    project_aggregate,
)
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    IntegrityError,
    JSONTranscoder,
    Recording,
    StoredEvent,
    Transcoder,
)
from eventsourcing.postgres import PostgresAggregateRecorder
from eventsourcing.sqlite import SQLiteAggregateRecorder
from psycopg import InterfaceError, OperationalError
from psycopg.sql import SQL, Identifier

from services import pg
from services.registry.commands import (
    AccountCommand,
    AccountNotFoundError,
    Command,
    EraseCitizen,
    ScopeError,
    SetTarget,
)
from services.registry.domain import (
    AccessRecord,
    Account,
    CommandReceipt,
    CommuneTarget,
    RuleViolationError,
)
from services.registry.identity import account_id, command_uuid
from services.registry.publication import TopicPublication
from services.registry.sealing import (
    ErasedError,
    KeyEncryptionKeyError,
    Sealer,
    open_key_store,
    store_cipher_env,
)
from services.registry.targets import Target, TargetBook
from services.registry.transcoding import FastTranscoder
from services.settings import Settings

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
# Commands per transaction of a batch. The library's PostgreSQL insert sends a batch's events
# through one psycopg pipeline, which hung here with a device's whole backlog (5,000
# registrations, over 10,000 events; 3,000 passed): a longer batch is stored as consecutive
# transactions of this many commands, in order. Each command keeps its own receipt, so a crash
# between two of them loses nothing a resend of the backlog does not give back.
MAX_TRANSACTION = 1000
READ_CHUNK = 500  # aggregate ids per batched read (SQLite allows 32,766 parameters)


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
                                         CommandReuseError, ErasedError, ScopeError)  # fmt: skip


REFUSALS_OR_CONFLICT: tuple[type[Exception], ...] = (*REFUSALS, ConcurrencyError)


@dataclass
class _Pending:
    """Aggregates changed and receipts made by commands not yet saved."""

    aggregates: dict[UUID, Any] = field(default_factory=dict)
    receipts: dict[UUID, CommandReceipt] = field(default_factory=dict)
    erased: set[UUID] = field(default_factory=set)  # accounts whose data keys go once saved
    # Aggregates and receipts read for the batch in one go, before its first command (None:
    # not in the store); each is taken once, then the batch's own changes or the store count.
    read: dict[UUID, Any] = field(default_factory=dict)


_gc_lock = threading.Lock()
_gc_batches = 0  # batches running with the cyclic collector paused
_gc_was_enabled = False


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector paused while a batch runs (process-wide: the first batch to
    start pauses it, the last to end restores what it was). A batch of 1,000 commands makes
    tens of thousands of objects that live until it is saved, so the collector ran several
    times a batch, each time walking all of them, and now and then the whole heap; once the
    batch is saved they are freed by reference counting, before the collector looks. Cycles
    made meanwhile (a refusal's traceback, say) wait for it at most one transaction."""
    global _gc_batches, _gc_was_enabled
    with _gc_lock:
        if _gc_batches == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_batches += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_batches -= 1
            if _gc_batches == 0 and _gc_was_enabled:
                gc.enable()


def _setting_up(settings: Settings) -> AbstractContextManager[None]:
    """On PostgreSQL, one process at a time creates the store's tables (see `services.pg`)."""
    if settings.event_store == "postgres":
        return pg.setting_up(settings)
    return nullcontext()


class Registry(Application[UUID]):
    """Write side of the backbone. Events of `Account` are the public stream."""

    name = "registry"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass (a test double, the bench's) is the same application on the same store:
        the eventsourcing library names PostgreSQL tables after the application's name."""
        cls.name = cls.__dict__.get("name", Registry.name)
        super().__init_subclass__(**kwargs)

    def __init__(self, settings: Settings) -> None:
        self._secret = settings.pseudonym_secret
        kek, self.keys = open_key_store(settings)
        self.sealer = Sealer(self.keys)
        self._target_book: TargetBook | None = None
        with _setting_up(settings):
            super().__init__(env={**settings.eventsourcing_env(), **store_cipher_env(kek)})
        self._check_store_opens()

    def construct_transcoder(self) -> Transcoder:
        """The library's JSON transcoder, but written and read by orjson (`transcoding.py`):
        the same stored format, so stores written before or after read alike."""
        transcoder = self.factory.transcoder()
        if type(transcoder) is JSONTranscoder:
            transcoder = FastTranscoder()
        if isinstance(transcoder, JSONTranscoder):
            self.register_transcodings(transcoder)
        return transcoder

    def _check_store_opens(self) -> None:
        """Refuse a KEK that does not open the events already stored (a wrong KEK_FILE)."""
        first = self.recorder.select_notifications(start=1, limit=1)
        try:
            for notification in first:
                self.mapper.to_domain_event(notification)
        except Exception as exc:
            self.keys.close()
            raise KeyEncryptionKeyError(
                "the key-encryption key does not open the stored events: wrong KEK_FILE"
            ) from exc

    def close(self) -> None:
        super().close()
        self.keys.close()

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        """`Application.save` (eventsourcing 9.5.6), but the events of this project's aggregates
        collected without the library's runtime-protocol `isinstance` checks: on Python 3.11
        those cost ~13 µs an aggregate, a tenth of a 5,000-command batch."""
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        for obj in objs:
            if isinstance(obj, Aggregate):
                processing_event.events.extend(obj.collect_events())
                processing_event.aggregates[obj.id] = obj
            else:  # a domain event, None, another kind of aggregate: as the library does
                processing_event.collect_events(obj)
        processing_event.collect_events(**kwargs)
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        self.notify(processing_event.events)
        return recordings

    def reveal(self, account_id: UUID, value: str) -> str:
        """A sealed personal field in clear (for the recorded reads that may), or "[erased]"."""
        return self.sealer.open(account_id, value)

    def account_id(self, citizen_id: str) -> UUID:
        return account_id(citizen_id, self._secret)

    def account(self, citizen_id: str) -> Account | None:
        return self._get(self.account_id(citizen_id))  # type: ignore[no-any-return]

    def aggregate_id(self, command: Command) -> UUID:
        """The id of the aggregate `command` changes: the registry holds the pseudonym key."""
        if isinstance(command, AccountCommand):
            return self.account_id(command.citizen_id)
        if isinstance(command, SetTarget):
            return CommuneTarget.id_for(command.commune_code, command.metric)
        raise TypeError(f"no aggregate for {type(command).__name__}")

    def handle(self, command: Command) -> Outcome:
        """Persist `command` unless already persisted; a resend gets the first outcome back."""
        for _ in range(MAX_ATTEMPTS):
            pending = _Pending()
            outcome = self._apply(command, pending)
            if not outcome.duplicate:
                try:
                    self._save(pending)
                except IntegrityError:
                    log.info("conflict on command %s, retrying", command.command_id)
                    continue
            self._shred(pending)
            return outcome
        raise ConcurrencyError("the account changed concurrently too many times")

    def handle_batch(self, commands: list[Command]) -> list[Outcome | Exception]:
        """Persist commands in order in one transaction (group commit); one result each.

        A refused command gets its exception in its place and changes nothing. Commands on
        the same aggregate see each other's effects, as they would one by one. If another
        writer got in between, the batch is redone one command at a time. More than
        MAX_TRANSACTION commands are stored in consecutive transactions of that many.
        """
        if len(commands) > MAX_TRANSACTION:
            return [
                result
                for start in range(0, len(commands), MAX_TRANSACTION)
                for result in self.handle_batch(commands[start : start + MAX_TRANSACTION])
            ]
        pending = _Pending()
        results: list[Outcome | Exception] = []
        ids = [(command_uuid(c.command_id), self.aggregate_id(c)) for c in commands]
        accounts = [
            agg_id
            for command, (_, agg_id) in zip(commands, ids, strict=True)
            if isinstance(command, AccountCommand)
        ]
        # The data keys of the batch's accounts read in a few queries, not one per account;
        # dropped before a conflict's one-by-one redo (another writer may have made some).
        with collector_paused(), self.keys.preloaded(accounts):
            pending.read = self._get_many([i for pair in ids for i in pair])
            for command, pair in zip(commands, ids, strict=True):
                try:
                    results.append(self._apply(command, pending, pair))
                except REFUSALS as exc:
                    results.append(exc)
            conflicted = False
            if pending.receipts:
                try:
                    self._save(pending)
                except IntegrityError:
                    conflicted = True
        if conflicted:
            log.info("batch of %d conflicted, handling one by one", len(commands))
            return [self._handle_or_error(command) for command in commands]
        self._shred(pending)
        return results

    def _save(self, pending: _Pending) -> None:
        """The data keys first (one commit for the batch), then the events sealed with them."""
        self.keys.flush()
        self.save(*pending.aggregates.values(), *pending.receipts.values())

    def _shred(self, pending: _Pending) -> None:
        """Destroy the data keys of accounts whose erasure is recorded (crypto-shredding)."""
        for agg_id in pending.erased:
            account = pending.aggregates.get(agg_id) or self._get(agg_id)
            if account is not None and account.erased:
                self.keys.destroy(agg_id)

    def _apply(
        self, command: Command, pending: _Pending, ids: tuple[UUID, UUID] | None = None
    ) -> Outcome:
        """Apply `command` to its aggregate (as changed by `pending`), adding its receipt; the
        first outcome again if the command was already persisted or is pending. `ids`: the
        command's receipt id and aggregate id, when the caller has them."""
        receipt_id, agg_id = ids or (command_uuid(command.command_id), self.aggregate_id(command))
        digest = command.digest(self._secret)
        if isinstance(command, EraseCitizen):
            pending.erased.add(agg_id)  # destroyed after the save, again for a resend
        earlier = pending.receipts.get(receipt_id) or self._stored(receipt_id, pending)
        if earlier is not None:
            return self._replay(earlier, digest)
        if agg_id in pending.aggregates:
            current = pending.aggregates[agg_id]
        else:
            current = self._stored(agg_id, pending)
        try:
            aggregate = command.apply(current, agg_id, self.sealer.for_account(agg_id))
        except REFUSALS:
            # Another writer (process) may have saved this very command between the two reads
            # above: its receipt and its events commit together, so look again before refusing.
            if receipt_id not in pending.receipts and (again := self._receipt(receipt_id)):
                return self._replay(again, digest)
            raise
        outcome = Outcome(command.result(aggregate))
        pending.aggregates[agg_id] = aggregate
        pending.receipts[receipt_id] = CommandReceipt.record(receipt_id, digest, outcome.body)
        return outcome

    @staticmethod
    def _replay(earlier: CommandReceipt, digest: str) -> Outcome:
        """The first outcome of a command already persisted, if this is the same command."""
        if earlier.digest != digest:
            raise CommandReuseError("command_id was already used for another command")
        return Outcome(earlier.result, duplicate=True)

    def _handle_or_error(self, command: Command) -> Outcome | Exception:
        try:
            return self.handle(command)
        except REFUSALS_OR_CONFLICT as exc:
            return exc

    def _receipt(self, receipt_id: UUID) -> CommandReceipt | None:
        return self._get(receipt_id)  # type: ignore[no-any-return]

    def _get(self, aggregate_id: UUID) -> Any:
        try:
            return self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None

    def _stored(self, aggregate_id: UUID, pending: _Pending) -> Any:
        """The aggregate as stored: as the batch read it, the first time (a refused command may
        have changed that copy before refusing), else from the store now."""
        if aggregate_id in pending.read:
            return pending.read.pop(aggregate_id)
        return self._get(aggregate_id)

    def _get_many(self, aggregate_ids: list[UUID]) -> dict[UUID, Any]:
        """The aggregates `aggregate_ids` (None for those not stored), from one query per
        `READ_CHUNK` ids rather than one each; {} on a store this does not know how to ask
        (the caller then reads them one by one)."""
        unique = list(dict.fromkeys(aggregate_ids))
        found: dict[UUID, list[StoredEvent]] = {agg_id: [] for agg_id in unique}
        for start in range(0, len(unique), READ_CHUNK):
            stored = self._select_events(unique[start : start + READ_CHUNK])
            if stored is None:
                return {}
            for event in stored:
                found[event.originator_id].append(event)  # type: ignore[index]
        to_domain = self.mapper.to_domain_event
        return {
            agg_id: project_aggregate(None, map(to_domain, events)) if events else None
            for agg_id, events in found.items()
        }

    def _select_events(self, ids: list[UUID]) -> Iterable[StoredEvent] | None:
        """Every stored event of the aggregates `ids`, each aggregate's in version order;
        None where a snapshot may stand for the first events, or the store is another kind."""
        recorder = self.recorder
        if self.snapshots is not None or recorder.datastore.originator_id_type != "uuid":  # type: ignore[attr-defined]
            return None
        if isinstance(recorder, SQLiteAggregateRecorder):
            statement = (
                f"SELECT * FROM {recorder.events_table_name} WHERE originator_id IN "
                f"({','.join('?' * len(ids))}) ORDER BY originator_id, originator_version"
            )
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(statement, [agg_id.hex for agg_id in ids])
                rows = cursor.fetchall()
            convert = recorder.convert_originator_id
            return [
                StoredEvent(convert(r["originator_id"]), r["originator_version"],
                            r["topic"], r["state"])
                for r in rows
            ]  # fmt: skip
        if isinstance(recorder, PostgresAggregateRecorder):
            query = SQL(
                "SELECT * FROM {schema}.{table} WHERE originator_id = ANY(%s) "
                "ORDER BY originator_id, originator_version"
            ).format(
                schema=Identifier(recorder.datastore.schema),
                table=Identifier(recorder.events_table_name),
            )
            try:
                with recorder.datastore.get_connection() as conn, conn.cursor() as cursor:
                    cursor.execute(query, [ids])
                    return [
                        StoredEvent(r["originator_id"], r["originator_version"],
                                    r["topic"], bytes(r["state"]))
                        for r in cursor.fetchall()
                    ]  # fmt: skip
            except (InterfaceError, OperationalError):  # one by one, with the library's retries
                log.info("batched read failed, reading one aggregate at a time")
        return None

    def publication(self, topic: str) -> TopicPublication | None:
        """The record of the topic this store is published to, if the relay made one."""
        return self._get(TopicPublication.id_for(topic))  # type: ignore[no-any-return]

    def target(self, commune_code: str, metric: str) -> CommuneTarget | None:
        return self._get(CommuneTarget.id_for(commune_code, metric))  # type: ignore[no-any-return]

    def targets(self) -> dict[tuple[str, str], Target]:
        """Every commune's current targets by (commune code, metric): one store query."""
        if self._target_book is None:
            self._target_book = TargetBook(self.recorder, self.mapper)
        return self._target_book.current()

    def record_access(
        self, account: Account, actor: str, role: str, purpose: str, scope: str
    ) -> AccessRecord:
        """Record that `actor` read this account's `scope` (history or state), and why."""
        place = {"commune_code": account.commune_code, "province_code": account.province_code}
        return self.record_access_to(account.id, place, actor, role, purpose, scope)

    def record_access_to(
        self,
        account_id: UUID,
        place: dict[str, str],
        actor: str,
        role: str,
        purpose: str,
        scope: str,
    ) -> AccessRecord:
        """Record a read of the account `account_id` (commune_code and province_code in
        `place`): also when there is no such account, so that probing leaves a trace."""
        record = AccessRecord(
            account_id=str(account_id),
            subject={"commune_code": place["commune_code"],
                     "province_code": place["province_code"]},
            actor=actor, role=role, purpose=purpose, scope=scope,
            occurred_at=datetime.now(UTC).isoformat(),
        )  # fmt: skip
        self.save(record)
        return record

    def account_with_times(self, citizen_id: str) -> tuple[Account | None, dict[int, datetime]]:
        """The account and, by sequence, when the store recorded each of its events: both from
        one read of its events."""
        events = list(self.events.get(self.account_id(citizen_id)))
        account = project_aggregate(None, events) if events else None
        return account, {e.originator_version: e.timestamp for e in events}  # type: ignore[attr-defined]

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
        return self.repository.get(acc_id, version=version)
