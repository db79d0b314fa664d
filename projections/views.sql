-- Read models per query, fed by materialized views from the rows the projector inserts (after
-- audit.sql). Each is ordered for the query that reads it; none is ever scanned whole by a
-- dashboard. Every table keeps a deduplication window: a batch inserted again under the same
-- insert_deduplication_token (topic, partition, offset range) is dropped here too
-- (deduplicate_blocks_in_dependent_materialized_views).

-- Tables of an earlier layout, replaced below by tables ordered for the windows the dashboards
-- read (place, then hour) and by exact counts that stay cheap at national scale. A new table is
-- filled from the rows at the first start (projections/clickhouse.py, _backfill).
DROP TABLE IF EXISTS {db}.hourly_counts_mv;
DROP TABLE IF EXISTS {db}.hourly_counts;
DROP TABLE IF EXISTS {db}.device_hours_mv;
DROP TABLE IF EXISTS {db}.device_hours;
DROP TABLE IF EXISTS {db}.commune_progress_mv;
DROP TABLE IF EXISTS {db}.commune_progress;
DROP TABLE IF EXISTS {db}.freshness_minutes_mv;
DROP TABLE IF EXISTS {db}.freshness_minutes;

-- Counts per place, hour, event type and, for registrations, channel, phone, station, device.
-- Ordered by province, then hour: a dashboard window reads its hours only, however long the
-- campaign; a commune's read names its province too (the key's first column).
CREATE TABLE IF NOT EXISTS {db}.hourly_totals
(
    province_code LowCardinality(String),
    commune_code  LowCardinality(String),
    hour          DateTime('UTC'),
    event_type    LowCardinality(String),
    channel       LowCardinality(String),
    phone         LowCardinality(String),
    station_id    String,
    device_id     String,
    n             UInt64
)
ENGINE = SummingMergeTree(n)
ORDER BY (province_code, hour, commune_code, event_type, channel, phone, station_id, device_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.hourly_totals_mv TO {db}.hourly_totals AS
SELECT province_code, commune_code, toStartOfHour(occurred_at) AS hour, event_type, channel,
       phone, station_id, device_id, count() AS n
FROM {db}.audit_events
GROUP BY province_code, commune_code, hour, event_type, channel, phone, station_id, device_id;

-- Registrations per place, hour and device: the devices' working days (same order).
CREATE TABLE IF NOT EXISTS {db}.device_activity
(
    province_code LowCardinality(String),
    commune_code  LowCardinality(String),
    hour          DateTime('UTC'),
    device_id     String,
    station_id    SimpleAggregateFunction(any, String),
    n             SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
ORDER BY (province_code, hour, commune_code, device_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.device_activity_mv TO {db}.device_activity AS
SELECT province_code, commune_code, toStartOfHour(occurred_at) AS hour, device_id,
       any(station_id) AS station_id, toUInt64(count()) AS n
FROM {db}.audit_events
WHERE event_type = 'registration_received'
GROUP BY province_code, commune_code, hour, device_id;

-- Accounts received and activated per commune, exact, as plain sums: an account is received
-- where its first registration (sequence 1) was taken — a retake after a rejection is not a
-- second account — and activated once at most (the state machine allows one activation).
-- Sums stay exact because every insert is deduplicated by its batch token (above).
CREATE TABLE IF NOT EXISTS {db}.commune_totals
(
    province_code LowCardinality(String),
    commune_code  LowCardinality(String),
    received      UInt64,
    activated     UInt64
)
ENGINE = SummingMergeTree
ORDER BY (province_code, commune_code)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.commune_totals_mv TO {db}.commune_totals AS
SELECT province_code, commune_code,
       countIf(event_type = 'registration_received' AND sequence = 1) AS received,
       countIf(event_type = 'account_activated') AS activated
FROM {db}.audit_events
WHERE event_type IN ('registration_received', 'account_activated')
GROUP BY province_code, commune_code;
-- The access log by time (the access records' own table is ordered by account).
CREATE TABLE IF NOT EXISTS {db}.access_by_time
(
    occurred_at  DateTime64(3, 'UTC'),
    account_id   UUID,
    commune_code LowCardinality(String),
    detail       String
)
ENGINE = MergeTree
ORDER BY (occurred_at, account_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.access_by_time_mv TO {db}.access_by_time AS
SELECT occurred_at, account_id, commune_code, detail
FROM {db}.access_events
WHERE event_type = 'history_read';

-- Recorded -> stored latency, per minute it was stored (a t-digest per minute: an hour's
-- freshness merges 60 rows, however many events the hour held). Small granules: a read
-- deserialises the digests of the granules it touches, not 8,192 minutes' worth.
CREATE TABLE IF NOT EXISTS {db}.freshness_by_minute
(
    minute  DateTime('UTC'),
    events  SimpleAggregateFunction(sum, UInt64),
    latency AggregateFunction(quantilesTDigest(0.5, 0.99), Int64)
)
ENGINE = AggregatingMergeTree
ORDER BY minute
SETTINGS non_replicated_deduplication_window = 10000, index_granularity = 64;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.freshness_by_minute_mv TO {db}.freshness_by_minute AS
SELECT toStartOfMinute(projected_at) AS minute, toUInt64(count()) AS events,
       quantilesTDigestState(0.5, 0.99)(dateDiff('millisecond', recorded_at, projected_at))
           AS latency
FROM {db}.audit_events
GROUP BY minute;

-- The rows' own tables deduplicate too; the hourly projection is replaced by hourly_counts.
ALTER TABLE {db}.audit_events MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE {db}.access_events MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE {db}.audit_events DROP PROJECTION IF EXISTS hourly
