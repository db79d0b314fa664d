"""The HTTP API: commands in, history and progress out. `create_app(settings)` builds it all."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from projections.audit import AuditTrail, verify_history
from projections.clickhouse import LockedClient, connect
from projections.runner import Projector, ProjectorConfig
from services.api import dashboard, intake, progress
from services.api.deps import (
    ADMIN,
    AUDIT,
    COMMANDS,
    READ,
    aware,
    backbone_of,
)
from services.api.errors import ApiError, install
from services.api.feed import Feed
from services.api.limits import BodyLimit
from services.api.models import (
    ActivationIn,
    DecisionIn,
    RegistrationIn,
    StatusChangeIn,
    TargetIn,
)
from services.api.responses import OrjsonResponse
from services.api.sync import SyncIn, apply_backlog
from services.registry.application import Outcome, Registry
from services.registry.batching import CommandBatcher
from services.registry.commands import Command
from services.registry.reconcile import reconcile
from services.settings import Settings

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024 * 1024
PersonalNumberPath = Annotated[str, Path(pattern=r"^[0-9]{12}$")]
Purpose = Annotated[str, Query(min_length=3, max_length=200, description="why the data is read")]


@dataclass
class Backbone:
    """What the API talks to: the registry (write side) and the read models."""

    settings: Settings
    registry: Registry
    trail: AuditTrail
    batcher: CommandBatcher
    feed: Feed = field(default_factory=Feed)
    projector: Projector | None = None
    stop: threading.Event | None = None
    thread: threading.Thread | None = None

    def submit(self, command: Command) -> Outcome:
        """Apply a command through the group-commit writer (blocking)."""
        return self.batcher.submit(command)

    async def apply(self, command: Command) -> Outcome:
        """Apply a command through the group-commit writer, without holding a thread."""
        return await asyncio.wrap_future(self.batcher.enqueue(command))


def build(settings: Settings, embedded_projector: bool = True) -> Backbone:
    """Wire the registry, the ClickHouse read models and (embedded) the projector."""
    registry = Registry(settings)
    client = LockedClient(connect(settings.clickhouse_url, settings.clickhouse_database))
    trail = AuditTrail(client, settings.clickhouse_database)
    backbone = Backbone(settings, registry, trail, CommandBatcher(registry))
    if embedded_projector:
        config = ProjectorConfig(
            bootstrap=settings.kafka_bootstrap,
            topic=settings.kafka_topic,
            group=settings.projector_group,
            clickhouse_url=settings.clickhouse_url,
            database=settings.clickhouse_database,
            group_mode=False,  # the only projector of this engine: no group to share with
        )
        backbone.projector = Projector(config, trail, on_batch=backbone.feed.publish)
        backbone.stop = threading.Event()
        backbone.thread = threading.Thread(
            target=backbone.projector.run, args=(backbone.stop,), name="projector", daemon=True
        )
    return backbone


def create_app(settings: Settings, embedded_projector: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backbone = build(settings, embedded_projector)
        app.state.backbone = backbone
        if backbone.thread is not None:
            backbone.thread.start()
        yield
        if backbone.stop is not None and backbone.thread is not None:
            backbone.stop.set()
            backbone.thread.join(timeout=15)
        backbone.batcher.close()
        backbone.registry.close()

    app = FastAPI(
        title="Project 06 e-ID event backbone",
        version="0.1.0",
        default_response_class=OrjsonResponse,
        lifespan=lifespan,
    )
    app.state.settings = settings
    install(app)

    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)

    _command_routes(app)
    _read_routes(app)
    progress.install(app)
    dashboard.install(app)
    return app


def _audited_account(request: Request, citizen_id: str, purpose: str, scope: str) -> Any:
    """The citizen's account, after recording this read of it; 404 if there is none."""
    registry = backbone_of(request).registry
    account = registry.account(citizen_id)
    if account is None:
        raise ApiError(404, "account_not_found", "no history is recorded for this citizen")
    registry.record_access(account, request.state.actor, request.state.role, purpose, scope)
    return account


def _outcome(outcome: Outcome, status: int = 201) -> OrjsonResponse:
    headers = {"Idempotent-Replayed": "true"} if outcome.duplicate else {}
    return OrjsonResponse(outcome.as_dict(), status_code=status, headers=headers)


def _command_routes(app: FastAPI) -> None:
    @app.post("/v1/registrations", status_code=201, dependencies=[COMMANDS])
    async def register(body: RegistrationIn, request: Request) -> OrjsonResponse:
        backbone = backbone_of(request)
        return _outcome(await backbone.apply(intake.registration(body, backbone.settings)))

    @app.post("/v1/registrations/{citizen_id}/decision", status_code=201, dependencies=[COMMANDS])
    async def decide(
        citizen_id: PersonalNumberPath, body: DecisionIn, request: Request
    ) -> OrjsonResponse:
        backbone = backbone_of(request)
        return _outcome(await backbone.apply(intake.decision(citizen_id, body, backbone.settings)))

    @app.post("/v1/activations", status_code=201, dependencies=[COMMANDS])
    async def activate(body: ActivationIn, request: Request) -> OrjsonResponse:
        backbone = backbone_of(request)
        return _outcome(await backbone.apply(intake.activation(body, backbone.settings)))

    @app.post("/v1/status-changes", status_code=201, dependencies=[COMMANDS])
    async def change_status(body: StatusChangeIn, request: Request) -> OrjsonResponse:
        backbone = backbone_of(request)
        return _outcome(await backbone.apply(intake.status_change(body, backbone.settings)))

    @app.post("/v1/sync", dependencies=[COMMANDS])
    def sync(body: SyncIn, request: Request) -> dict[str, Any]:
        """A device's offline backlog, applied in order; resending all or part is safe."""
        backbone = backbone_of(request)
        results = apply_backlog(backbone.registry, backbone.settings, body)
        summary: dict[str, int] = {}
        for item in results:
            summary[item["status"]] = summary.get(item["status"], 0) + 1
        return {"device_id": body.device_id, "summary": summary, "results": results}

    @app.post("/v1/reconciliation/deaths", dependencies=[ADMIN])
    async def reconcile_deaths(request: Request) -> dict[str, Any]:
        """A civil-registry CSV (personal_number,date_of_death,registry_reference) as text/csv."""
        try:
            text = (await request.body()).decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "invalid_csv", "the body must be UTF-8 CSV") from None
        backbone = backbone_of(request)
        try:
            return await run_in_threadpool(reconcile, backbone.registry, text)
        except ValueError as exc:
            raise ApiError(422, "invalid_csv", str(exc), {"body": str(exc)}) from None

    @app.put("/v1/targets/{commune_code}", dependencies=[ADMIN])
    def set_target(
        commune_code: Annotated[str, Path(pattern=r"^[0-9]{5}$")], body: TargetIn, request: Request
    ) -> OrjsonResponse:
        return _outcome(backbone_of(request).submit(intake.target(commune_code, body)), 200)


def _read_routes(app: FastAPI) -> None:
    @app.get("/healthz")
    def healthz(request: Request) -> dict[str, Any]:
        backbone = backbone_of(request)
        projector = backbone.projector
        return {
            "status": "ok",
            "event_store_position": backbone.registry.recorder.max_notification_id() or 0,
            "projected_events": projector.stored if projector else None,
            "projector_alive": bool(backbone.thread and backbone.thread.is_alive()),
        }

    @app.get("/v1/feed", dependencies=[READ])
    async def feed(request: Request) -> StreamingResponse:
        """Server-sent events: one `counts` event per stored batch (token may be ?token=)."""
        return StreamingResponse(
            backbone_of(request).feed.stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get("/v1/citizens/{citizen_id}/history", dependencies=[AUDIT])
    def history(
        citizen_id: PersonalNumberPath, purpose: Purpose, request: Request
    ) -> dict[str, Any]:
        """Every event of the citizen in order, with the chain and completeness verified.

        The read itself is recorded (who, when, why) before anything is returned.
        """
        backbone = backbone_of(request)
        account = _audited_account(request, citizen_id, purpose, "history")
        events = backbone.trail.history(account.id)
        return {
            "account_id": str(account.id),
            "state": account.snapshot_state(),
            "events": events,
            "verification": verify_history(events, account.version),
        }

    @app.get("/v1/citizens/{citizen_id}/state", dependencies=[AUDIT])
    def state(
        citizen_id: PersonalNumberPath,
        purpose: Purpose,
        request: Request,
        as_of: datetime | None = None,
    ) -> dict[str, Any]:
        """The account replayed from the event store up to `as_of` (default: now)."""
        moment = aware(as_of) if as_of else datetime.now(UTC)
        _audited_account(request, citizen_id, purpose, "state")
        account = backbone_of(request).registry.account_as_of(citizen_id, moment)
        if account is None:
            return {"as_of": moment.isoformat(), "exists": False, "version": 0}
        return {
            "as_of": moment.isoformat(), "exists": True, "account_id": str(account.id),
            "version": account.version, **account.snapshot_state(),
            "commune_code": account.commune_code, "province_code": account.province_code,
            "attempts": account.attempts,
        }  # fmt: skip

    @app.get("/v1/access-log", dependencies=[ADMIN])
    def access_log(
        request: Request,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 500,
    ) -> dict[str, Any]:
        """Reads of citizens' histories and states: who, when, what, for what stated purpose."""
        until = aware(until) if until else datetime.now(UTC) + timedelta(minutes=1)
        since = aware(since) if since else until - timedelta(days=7)
        return {"reads": backbone_of(request).trail.access_log(since, until, limit)}
