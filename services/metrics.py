"""Prometheus metrics (`eid_...`), each process with its own `CollectorRegistry`.

The API keeps one registry per app (tests build many apps in one process; the global default
registry would refuse the same names twice) and serves it at `GET /metrics`; the relay serves
its own on RELAY_METRICS_PORT. What a component's loop already knows (state, lag, progress,
totals) is read at scrape time by collectors; what happens per request is counted where it
happens. Labels are bounded sets (route templates, command types, states), never personal
numbers, names or account ids.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.health import ComponentHealth

if TYPE_CHECKING:
    from projections.runner import Projector

log = logging.getLogger(__name__)
# No `<name>_created` series: they double every counter, and `eid_commands_created` would read
# like the "created" outcome. (A process-wide switch of the library; these are our processes.)
disable_created_metrics()  # type: ignore[no-untyped-call]

STATES = ("starting", "running", "retrying", "paused", "failed", "stopped")
COMMAND_TYPES = ("registration", "decision", "activation", "status_change", "target", "erasure")
COMMAND_OUTCOMES = ("created", "duplicate", "refused", "error")
VERIFICATION_RESULTS = ("verified", "pending", "broken", "incomplete")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # a path no route serves: never the raw path (it may hold a number)

FRESHNESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800, 3600)
BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


class HealthCollector(Collector):
    """Each `ComponentHealth`, read when scraped: its state (one series per state, 1 for the
    current one), seconds since its loop last went round, restarts, and its lag in events."""

    def __init__(self, *components: ComponentHealth) -> None:
        self.components = components

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "eid_component_state",
            "Current state of the component (1) among starting, running, retrying, paused, "
            "failed, stopped (0)",
            labels=["component", "state"],
        )
        since = GaugeMetricFamily(
            "eid_component_seconds_since_progress",
            "Seconds since the component's loop last went round",
            labels=["component"],
        )
        restarts = CounterMetricFamily(
            "eid_component_restarts",
            "Times the component started over after a transient fault",
            labels=["component"],
        )
        lags = []
        for health in self.components:
            now = health.as_dict()
            for name in STATES:
                state.add_metric([health.name, name], 1.0 if now["state"] == name else 0.0)
            since.add_metric([health.name], health.seconds_since_progress())
            restarts.add_metric([health.name], float(now["restarts"]))
            if now["lag"] is not None:
                lag = GaugeMetricFamily(
                    f"eid_{health.name}_lag_events", f"Events the {health.name} is behind"
                )
                lag.add_metric([], float(now["lag"]))
                lags.append(lag)
        yield from (state, since, restarts, *lags)


class ProjectorCollector(Collector):
    """The embedded projector's totals, read when scraped."""

    def __init__(self, projector: Projector) -> None:
        self.projector = projector

    def collect(self) -> Iterator[Metric]:
        p = self.projector
        yield CounterMetricFamily(
            "eid_projector_stored", "Events stored in the read models", value=p.stored
        )
        yield CounterMetricFamily(
            "eid_projector_dead_letters",
            "Undecodable records sent to the dead-letter topic",
            value=p.dead_letters.sent,
        )
        yield GaugeMetricFamily(
            "eid_projector_paused_partitions",
            "Partitions waiting for a newer schema (an upgrade)",
            value=len(p.paused),
        )


class EventStoreCollector(Collector):
    """The event store's head position, read when scraped (absent while it cannot be read)."""

    def __init__(self, position: Callable[[], int | None]) -> None:
        self.position = position

    def collect(self) -> Iterator[Metric]:
        try:
            head = self.position() or 0
        except Exception:  # /readyz says why; a scrape still answers
            return
        yield GaugeMetricFamily(
            "eid_event_store_position", "Highest notification id in the event store", value=head
        )


class Metrics:
    """The API process's metrics, on a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._watched: list[Collector] = []
        r = self.registry
        self.commands = Counter(
            "eid_commands", "Commands submitted, by type and outcome", ["type", "outcome"],
            registry=r,
        )  # fmt: skip
        for kind in COMMAND_TYPES:
            for outcome in COMMAND_OUTCOMES:
                self.commands.labels(kind, outcome)
        self.http = Histogram(
            "eid_http_request_duration_seconds",
            "Time until the response headers were sent, by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.verifications = Counter(
            "eid_history_verifications", "History reads, by verification result", ["result"],
            registry=r,
        )  # fmt: skip
        for result in VERIFICATION_RESULTS:
            self.verifications.labels(result)
        self.batch_size = Histogram(
            "eid_projector_batch_events", "Events per stored projector batch",
            buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.freshness = Histogram(
            "eid_projector_freshness_seconds",
            "Seconds from an event's recording in the store to its storing in the read models",
            buckets=FRESHNESS_BUCKETS,
            registry=r,
        )

    def watch(self, *collectors: Collector) -> None:
        """Read `collectors` at scrape time, instead of those watched before (an app started
        again builds a new backbone; its metrics must not appear twice)."""
        for old in self._watched:
            self.registry.unregister(old)
        for collector in collectors:
            self.registry.register(collector)
        self._watched = list(collectors)

    def command(self, kind: str, outcome: str) -> None:
        self.commands.labels(kind if kind in COMMAND_TYPES else "other", outcome).inc()

    def verification(self, result: str) -> None:
        self.verifications.labels(result if result in VERIFICATION_RESULTS else "other").inc()

    def projected(self, events: list[dict[str, Any]]) -> None:
        """The projector stored `events` (one batch): size, and recorded -> counted."""
        self.batch_size.observe(len(events))
        now_ms = time.time() * 1000  # recorded_at in epoch ms (AvroCodec.decode_plain)
        for event in events:
            self.freshness.observe(max(0.0, (now_ms - event["recorded_at"]) / 1000))


def chain(
    *observers: Callable[[list[dict[str, Any]]], None],
) -> Callable[[list[dict[str, Any]]], None]:
    """One `on_batch` callback that calls each observer in turn."""

    def each(events: list[dict[str, Any]]) -> None:
        for observe in observers:
            observe(events)

    return each


class HttpMetrics:
    """Pure ASGI middleware: the latency of every HTTP request, labelled by route template
    (never the raw path), method and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        observed = False

        def observe(status: int) -> None:
            nonlocal observed
            observed = True
            method = scope["method"] if scope["method"] in METHODS else "other"
            labels = (_route(scope), method, str(status))
            self.metrics.http.labels(*labels).observe(time.perf_counter() - began)

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not observed:
                observe(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        except BaseException:
            if not observed:
                observe(500)
            raise


def _route(scope: Scope) -> str:
    """The template of the route that served (or would serve) the request."""
    route = scope.get("route")
    if route is None:  # answered before routing (e.g. a body over the limit)
        app = scope.get("app")
        for candidate in getattr(getattr(app, "router", None), "routes", ()):
            match, _ = candidate.matches(scope)
            if match == Match.FULL:
                route = candidate
                break
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class RelayMetrics:
    """The relay process's metrics: what it published, its state and lag."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.published = Counter(
            "eid_relay_published", "Events published to the topic", registry=self.registry
        )
        self.position = Gauge(
            "eid_relay_position",
            "Event store position published up to (committed on the topic)",
            registry=self.registry,
        )

    def on_batch(self, count: int, position: int) -> None:
        self.published.inc(count)
        self.position.set(position)

    def watch(self, health: ComponentHealth) -> None:
        self.registry.register(HealthCollector(health))


def serve(registry: CollectorRegistry, port: int, host: str = "127.0.0.1") -> WSGIServer | None:
    """Serve `registry` over HTTP on host:port in a daemon thread; None (with an error logged)
    when the port cannot be bound: metrics going dark must not stop the component."""
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        log.error("metrics not served: cannot listen on %s:%d (%s)", host, port, exc.strerror)
        return None
    log.info("metrics on http://%s:%d/metrics", host, port)
    return server


def stop_serving(server: WSGIServer | None) -> None:
    if server is not None:
        with contextlib.suppress(OSError):
            server.shutdown()
            server.server_close()
