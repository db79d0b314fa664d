"""The audit-trail read model (SQL in audit.sql): rows from events, history and hourly counts."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple
from uuid import UUID

import orjson

from projections.clickhouse import LockedClient, connect
from schemas.chain import first_broken_link
from schemas.event_types import HISTORY_READ, REGISTRATION_RECEIVED
from services.registry.validation import province_or_none

COLUMNS = [
    "event_id", "event_type", "account_id", "sequence", "position", "sealed_citizen_id",
    "occurred_at",
    "recorded_at", "province_code", "commune_code", "station_id", "device_id", "operator_id",
    "channel", "phone", "detail", "previous_hash", "hash", "kafka_partition", "kafka_offset",
    "topic_id", "actor",
]  # fmt: skip

_WHERE_FIELDS = ("station_id", "device_id", "operator_id", "channel", "phone")
ACCESS_TABLE = "access_events"  # the rows of topic <topic>.access: who read whom, and why
HISTORY_COLUMNS = [
    "event_id", "event_type", "account_id", "sequence", "position", "sealed_citizen_id",
    "occurred_at",
    "recorded_at", "province_code", "commune_code", *_WHERE_FIELDS, "detail", "previous_hash",
    "hash", "actor",
]  # fmt: skip


_TYPE_AT = HISTORY_COLUMNS.index("event_type")


# Hourly breakdowns: name -> column. Channel, phone and device are known for registrations.
BREAKDOWNS = {
    "event_type": "event_type",
    "channel": "channel",
    "phone": "phone",
    "device": "device_id",
}
REGISTRATIONS = f"event_type = '{REGISTRATION_RECEIVED}'"
# A device-day as /v1/progress/devices shows it (AuditTrail.device_days).
DEVICE_DAY_FIELDS = ("device_id", "station_id", "date", "registrations", "first_hour",
                     "last_hour", "active_hours", "idle_hours", "peak_per_hour")  # fmt: skip
VIETNAM_ISO = "%Y-%m-%dT%H:%i:%S+07:00"  # Vietnam keeps UTC+7 all year (no daylight saving)
# Every table of one database's read models: what a rebuild swaps in, all at once.
READ_MODEL_TABLES = ("audit_events", "access_events", "hourly_totals", "device_activity",
                     "commune_totals", "access_by_time", "freshness_by_minute")  # fmt: skip


def _json_default(value: Any) -> str:
    if isinstance(value, date | datetime | UUID):
        return value.isoformat() if not isinstance(value, UUID) else str(value)
    raise TypeError(type(value).__name__)


def to_columns(
    events: list[dict[str, Any]], places: list[tuple[int, int]], topic_id: UUID
) -> list[list[Any]]:
    """The audit rows of `events` read from (partition, offset) `places`, column by column
    (COLUMNS), for a column-oriented INSERT. Events come as `AvroCodec.decode_plain` gives them
    (ids as strings, times as epoch milliseconds; `decode`'s objects are taken too, but not
    mixed in one batch). The personal number itself is not stored in the read model. The actor
    (schema v3) is '' when the record has none (v2 and older records, access records)."""
    payloads = [dict(event["payload"]) for event in events]
    where = [[str(p.pop(name, "")) for p in payloads] for name in _WHERE_FIELDS]
    dumps = orjson.dumps
    return [
        *([e[name] for e in events] for name in _EVENT_COLUMNS),
        *where,
        [dumps(p, default=_json_default).decode() for p in payloads],
        [e["previous_hash"] for e in events],
        [e["hash"] for e in events],
        [partition for partition, _ in places],
        [offset for _, offset in places],
        [topic_id] * len(events),
        [e.get("actor") or "" for e in events],
    ]


def seconds_text(moments: list[Any]) -> list[str]:
    """Epoch milliseconds (or datetimes) as the seconds text a DateTime64(3) column reads
    ("1687831200.123"; a bare integer would be read as seconds)."""
    if moments and isinstance(moments[0], datetime):
        moments = [(m - EPOCH) // MILLISECOND for m in moments]
    return [f"{m / 1000:.3f}" for m in moments]


def from_millis(millis: int) -> datetime:
    """An Avro timestamp-millis (epoch milliseconds), as the UTC moment it is."""
    return EPOCH + timedelta(milliseconds=millis)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)
_TIME_INDEXES = (COLUMNS.index("occurred_at"), COLUMNS.index("recorded_at"))
_EVENT_COLUMNS = COLUMNS[: COLUMNS.index("station_id")]  # taken from the event as they are


def as_utc(value: datetime) -> datetime:
    """ClickHouse returns DateTime64(3, 'UTC') values naive; they are UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def payload_of(event_type: str, detail: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """The event's public payload again: registrations keep where/with-what in columns."""
    if event_type != REGISTRATION_RECEIVED:
        return detail
    return {**detail, **{name: row[name] for name in _WHERE_FIELDS}}


def _millis(moment: datetime) -> datetime:
    """Recording times travel in milliseconds (Avro timestamp-millis, DateTime64(3))."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def verify_history(
    events: list[dict[str, Any]], recorded: dict[int, datetime], watermark: datetime | None
) -> dict[str, Any]:
    """Is the history complete and is its chain unbroken, or is part of it not projected yet?

    `recorded` maps each sequence in the store to when it was recorded; `watermark` is the
    newest recording time the read model holds in this account's partition (the topic keeps
    an account's events in order): a missing event recorded after it is `pending` (lag), one
    recorded before it is `missing` (deleted or never stored).
    """
    have = {e["sequence"] for e in events}
    absent = sorted(set(recorded) - have)
    pending = [s for s in absent if watermark is None or _millis(recorded[s]) > watermark]
    missing = [s for s in absent if s not in pending]
    broken = first_broken_link(events)
    complete = not missing and len(events) + len(pending) == len(recorded)
    status = (
        "broken"
        if broken is not None
        else "incomplete"
        if not complete
        else ("pending" if pending else "verified")
    )
    return {
        "status": status,
        "verified": status == "verified",
        "chain_intact": broken is None,
        "first_broken_link": None if broken is None else {
            "sequence": events[broken]["sequence"], "event_id": events[broken]["event_id"]},
        "complete": complete and not pending,
        "events_in_store": len(recorded),
        "events_in_read_model": len(events),
        "missing_sequences": missing,
        "pending": len(pending),
        "pending_sequences": pending,
    }  # fmt: skip


def _place(level: str, code: str) -> tuple[str, dict[str, str]]:
    """WHERE terms and parameters of one commune or province. The tables are ordered by
    province first: a commune's read names its province too (looked up from its code)."""
    if level != "commune":
        return "province_code = {province:String}", {"province": code}
    province = province_or_none(code) or ""  # no current commune: no rows
    where = "province_code = {province:String} AND commune_code = {commune:String}"
    return where, {"province": province, "commune": code}


def _in_place_and_hours(level: str, code: str, only: str) -> tuple[str, dict[str, str]]:
    """WHERE: one commune or province, rows matching `only`, in the hours from the one that
    holds {since} to the one before {until} (the tables keep whole hours); and its parameters."""
    place, params = _place(level, code)
    hours = "hour >= toStartOfHour({since:DateTime64(3)}) AND hour < {until:DateTime64(3)}"
    return f"WHERE {place} AND {hours} AND {only}", params


class ResumePoint(NamedTuple):
    """The end of one partition's stored rows: its highest offset, the id of the topic it came
    from, and the newest recording time among them."""

    offset: int
    topic_id: UUID
    newest: datetime


class AuditTrail:
    """Reads and writes the audit trail in one ClickHouse database."""

    def __init__(self, client: LockedClient, database: str, table: str = "audit_events") -> None:
        self.client = client
        self.database = database
        self.table = f"{database}.{table}"
        # Access records come from their own topic into their own table (ACCESS_TABLE).
        self.access_table = f"{database}.{ACCESS_TABLE}"

    def store(self, columns: list[list[Any]], token: str | None = None) -> None:
        """One column-oriented INSERT of `columns` (`to_columns`, sent as JSON columns); with
        `token` (topic id, partitions and offset ranges of the batch) the same batch inserted
        again is dropped, rows and every count derived from them alike (views.sql)."""
        if columns and columns[0]:
            sent = list(columns)
            for index in _TIME_INDEXES:
                sent[index] = seconds_text(columns[index])
            self.client.insert_json_columns(self.table, sent, COLUMNS, dedup_token=token)

    def watermarks(self) -> dict[int, datetime]:
        """partition -> the newest recording time stored from it."""
        return {p: point.newest for p, point in self.resume_points().items()}

    def watermark(self, account_id: UUID) -> datetime | None:
        """The newest recording time stored in the partition of this account's events; with no
        row of the account yet, the oldest of all partitions' (the surest bound). A projector
        in this process knows better (`Projector.watermark`): this one trusts the read model."""
        marks = self.watermarks()
        mine = (
            f"SELECT any(kafka_partition), count() FROM {self.table} WHERE account_id = {{a:UUID}}"
        )
        partition, n = self.client.query_rows(mine, {"a": str(account_id)})[0]
        if n:
            return marks.get(int(partition))
        return min(marks.values()) if marks else None

    def has_event(self, event_id: str) -> bool:
        sql = f"SELECT count() FROM {self.table} WHERE event_id = {{e:UUID}}"
        return bool(self.client.query_rows(sql, {"e": str(event_id)})[0][0])

    def mark_rebuild(self, topic_id: UUID, missing_offsets: int) -> None:
        self.client.insert(
            f"{self.database}.rebuilds", [[topic_id, int(missing_offsets == 0), missing_offsets]],
            ["topic_id", "complete", "missing_offsets"],
        )  # fmt: skip

    def completeness(self) -> dict[str, Any]:
        """Whether the read models hold the whole topic (false after a lossy rebuild)."""
        rows = self.client.query_rows(
            f"SELECT complete, missing_offsets, rebuilt_at FROM {self.database}.rebuilds "
            f"ORDER BY rebuilt_at DESC LIMIT 1"
        )
        if not rows:
            return {"complete": True, "missing_offsets": 0, "rebuilt_at": None}
        complete, missing, at = rows[0]
        return {"complete": bool(complete), "missing_offsets": int(missing),
                "rebuilt_at": as_utc(at).isoformat()}  # fmt: skip

    def resume_points(self) -> dict[int, ResumePoint]:
        """partition -> where the stored rows of that partition end (one aggregation)."""
        sql = (
            f"SELECT kafka_partition, max(kafka_offset), argMax(topic_id, kafka_offset), "
            f"max(recorded_at) FROM {self.table} GROUP BY kafka_partition"
        )
        return {
            int(p): ResumePoint(int(o), UUID(str(t)), as_utc(newest))
            for p, o, t, newest in self.client.query_rows(sql)
        }

    def history(self, account_id: UUID) -> list[dict[str, Any]]:
        """Every stored event of one account in order, with its full public payload."""
        rows = [item for _, item in self._rows(self._events_sql(), account_id)]
        return sorted(rows, key=lambda e: e["sequence"])

    def history_and_reads(
        self, account_id: UUID
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """One account's events in sequence order and the reads of it in store order, in one
        query (each is a primary-key range of its table)."""
        sql = (
            f"{self._events_sql()} UNION ALL SELECT 1 AS k, shown "
            f"FROM {self.access_table} WHERE account_id = {{a:UUID}}"
        )
        events: list[dict[str, Any]] = []
        reads: list[dict[str, Any]] = []
        for kind, item in self._rows(sql, account_id):
            (reads if kind else events).append(item)
        events.sort(key=lambda e: e["sequence"])
        reads.sort(key=lambda e: e["position"])
        return events, reads

    def _events_sql(self) -> str:
        # Reads recorded in the events table by older read models are left out by `_rows`:
        # a condition here would make the engine read one more column for every history.
        return f"SELECT 0 AS k, shown FROM {self.table} WHERE account_id = {{a:UUID}}"

    def _rows(self, sql: str, account_id: UUID) -> list[tuple[int, dict[str, Any]]]:
        """(kind, row as the auditor is shown it) for each row `sql` returns: its column
        `shown` packs the HISTORY_COLUMNS as a JSON array (audit.sql). Kind 0 (events) leaves
        out history reads (kept in the events table by read models older than the access
        topic; they are kind 1, from the access table)."""
        out = []
        for kind, shown in self.client.query_rows(sql, {"a": str(account_id)}):
            values = orjson.loads(shown)
            if not kind and values[_TYPE_AT] == HISTORY_READ:
                continue
            item = dict(zip(HISTORY_COLUMNS, values, strict=True))
            item["sequence"], item["position"] = int(item["sequence"]), int(item["position"])
            for name in ("occurred_at", "recorded_at"):  # "2023-06-27 04:00:00.123", UTC
                item[name] = as_utc(datetime.fromisoformat(item[name]))
            item["actor"] = item["actor"] or None  # none recorded (see to_columns)
            item["payload"] = payload_of(item["event_type"], orjson.loads(item.pop("detail")), item)
            out.append((int(kind), item))
        return out

    def hourly(
        self, level: str, code: str, since: datetime, until: datetime, by: str = "event_type"
    ) -> list[tuple[datetime, str, int]]:
        """(hour, key, count) by the hour events happened, in a commune or a province, for the
        whole hours from `since`'s to before `until` (hourly_totals).

        `by` is event_type (all events), or channel / phone / device (registrations received).
        """
        only = "1" if by == "event_type" else REGISTRATIONS
        where, place = _in_place_and_hours(level, code, only)
        sql = (
            f"SELECT hour, {BREAKDOWNS[by]} AS key, sum(n) FROM {self.database}.hourly_totals "
            f"{where} GROUP BY hour, key ORDER BY hour, key"
        )
        rows = self.client.query_rows(sql, {**place, "since": since, "until": until})
        return [(as_utc(hour), str(k), int(n)) for hour, k, n in rows]

    def device_days(
        self, level: str, code: str, since: datetime, until: datetime
    ) -> list[dict[str, Any]]:
        """Per device and Vietnam day, as the dashboard shows it: registrations, first and last
        working hour (Vietnam time, RFC 3339), hours with registrations, idle hours between the
        first and the last (clock hours with none: "the machine waits for people"), most in
        one hour. All computed and formatted by the engine over device_activity: a province's
        week is thousands of device-days, and only they travel back, ready to send."""
        where, place = _in_place_and_hours(level, code, "1")
        local = f"'{VIETNAM_ISO}', 'Asia/Ho_Chi_Minh'"
        sql = (
            f"SELECT device_id, any(station), toString(toDate(hour, 'Asia/Ho_Chi_Minh')) AS day, "
            f"sum(per_hour), formatDateTime(min(hour), {local}), "
            f"formatDateTime(max(hour), {local}), count(), "
            f"dateDiff('hour', min(hour), max(hour)) + 1 - count(), max(per_hour) FROM ("
            f" SELECT device_id, any(station_id) AS station, hour, sum(n) AS per_hour "
            f" FROM {self.database}.device_activity {where} GROUP BY device_id, hour"
            f") GROUP BY device_id, day ORDER BY device_id, day"
        )
        rows = self.client.query_rows(sql, {**place, "since": since, "until": until})
        return [dict(zip(DEVICE_DAY_FIELDS, row, strict=True)) for row in rows]

    def access_log(self, since: datetime, until: datetime, limit: int) -> list[dict[str, Any]]:
        """Who read which account's history or state, when, and for what stated purpose."""
        sql = (
            f"SELECT occurred_at, account_id, detail, commune_code "
            f"FROM {self.database}.access_by_time "
            f"WHERE occurred_at >= {{since:DateTime64(3)}} "
            f"AND occurred_at < {{until:DateTime64(3)}} "
            f"ORDER BY occurred_at DESC LIMIT {int(limit)}"
        )
        rows = self.client.query_rows(sql, {"since": since, "until": until})
        return [
            {
                "at": as_utc(at),
                "account_id": str(acc),
                **orjson.loads(detail),
                "commune_code": commune,
            }
            for at, acc, detail, commune in rows
        ]

    def freshness(self, minutes: int) -> dict[str, float | int]:
        """Seconds from the registry recording an event to its row being stored (visible),
        over the minutes stored in the last `minutes` (t-digest quantiles)."""
        sql = (
            f"SELECT sum(events), quantilesTDigestMerge(0.5, 0.99)(latency) "
            f"FROM {self.database}.freshness_by_minute "
            f"WHERE minute >= toStartOfMinute(now() - INTERVAL {int(minutes)} MINUTE)"
        )
        n, quantiles = self.client.query_rows(sql)[0]
        p50, p99 = (quantiles or [0, 0]) if n else (0, 0)
        return {"events": int(n or 0), "p50_s": float(p50) / 1000, "p99_s": float(p99) / 1000}

    def cumulative(self, level: str, code: str) -> dict[str, dict[str, int]]:
        """commune -> {received, activated}: accounts whose first registration was taken in the
        commune, and accounts activated there (commune_totals), in a commune or a province."""
        where, params = _place(level, code)
        sql = (
            f"SELECT commune_code, sum(received), sum(activated) "
            f"FROM {self.database}.commune_totals WHERE {where} GROUP BY commune_code"
        )
        rows = self.client.query_rows(sql, params)
        return {c: {"received": int(r), "activated": int(a)} for c, r, a in rows}

    def totals(self) -> dict[str, int]:
        sql = f"SELECT event_type, count() FROM {self.table} GROUP BY event_type"
        return {t: int(n) for t, n in self.client.query_rows(sql)}


def audit_trail(url: str, database: str, table: str = "audit_events") -> AuditTrail:
    """The audit trail in `database` on the ClickHouse at `url` (tables made if missing)."""
    return AuditTrail(LockedClient(connect(url, database)), database, table)
