-- Read models per query, fed by materialized views from the rows the projector inserts (after
-- audit.sql). Each is ordered for the query that reads it; none is ever scanned whole by a
-- dashboard. Every table keeps a deduplication window: a batch inserted again under the same
-- insert_deduplication_token (topic, partition, offset range) is dropped here too
-- (deduplicate_blocks_in_dependent_materialized_views).

-- Counts per place, hour, event type and, for registrations, channel, phone, station, device.
CREATE TABLE IF NOT EXISTS {db}.hourly_counts
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
ORDER BY (province_code, commune_code, hour, event_type, channel, phone, station_id, device_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.hourly_counts_mv TO {db}.hourly_counts AS
SELECT province_code, commune_code, toStartOfHour(occurred_at) AS hour, event_type, channel,
       phone, station_id, device_id, count() AS n
FROM {db}.audit_events
GROUP BY province_code, commune_code, hour, event_type, channel, phone, station_id, device_id;

-- Registrations per place, device and hour: the devices' working days.
CREATE TABLE IF NOT EXISTS {db}.device_hours
(
    province_code LowCardinality(String),
    commune_code  LowCardinality(String),
    hour          DateTime('UTC'),
    device_id     String,
    station_id    SimpleAggregateFunction(any, String),
    n             SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
ORDER BY (province_code, commune_code, hour, device_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.device_hours_mv TO {db}.device_hours AS
SELECT province_code, commune_code, toStartOfHour(occurred_at) AS hour, device_id,
       any(station_id) AS station_id, toUInt64(count()) AS n
FROM {db}.audit_events
WHERE event_type = 'registration_received'
GROUP BY province_code, commune_code, hour, device_id;

-- Distinct accounts received and activated per commune (exact: the states keep the ids).
CREATE TABLE IF NOT EXISTS {db}.commune_progress
(
    province_code LowCardinality(String),
    commune_code  LowCardinality(String),
    received      AggregateFunction(uniqExact, UUID),
    activated     AggregateFunction(uniqExact, UUID)
)
ENGINE = AggregatingMergeTree
ORDER BY (province_code, commune_code)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.commune_progress_mv TO {db}.commune_progress AS
SELECT province_code, commune_code,
       uniqExactStateIf(account_id, event_type = 'registration_received') AS received,
       uniqExactStateIf(account_id, event_type = 'account_activated') AS activated
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
-- freshness merges 60 rows, however many events the hour held).
CREATE TABLE IF NOT EXISTS {db}.freshness_minutes
(
    minute  DateTime('UTC'),
    events  SimpleAggregateFunction(sum, UInt64),
    latency AggregateFunction(quantilesTDigest(0.5, 0.99), Int64)
)
ENGINE = AggregatingMergeTree
ORDER BY minute
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.freshness_minutes_mv TO {db}.freshness_minutes AS
SELECT toStartOfMinute(projected_at) AS minute, toUInt64(count()) AS events,
       quantilesTDigestState(0.5, 0.99)(dateDiff('millisecond', recorded_at, projected_at))
           AS latency
FROM {db}.audit_events
GROUP BY minute;

-- The rows' own tables deduplicate too; the hourly projection is replaced by hourly_counts.
ALTER TABLE {db}.audit_events MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE {db}.access_events MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE {db}.audit_events DROP PROJECTION IF EXISTS hourly
