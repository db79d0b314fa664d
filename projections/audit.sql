-- The audit trail: every event of every citizen, one row each, in account order.
-- Rows of one Kafka batch are written in one INSERT (one part, atomic); kafka_partition and
-- kafka_offset let the projector resume exactly after the last stored row. The counts the
-- dashboards read are kept by materialized views (views.sql), written with the rows they count.
CREATE TABLE IF NOT EXISTS {db}.audit_events
(
    event_id        UUID,
    event_type      LowCardinality(String),
    account_id      UUID,
    sequence        UInt32,
    position        UInt64,
    sealed_citizen_id String,
    occurred_at     DateTime64(3, 'UTC'),
    recorded_at     DateTime64(3, 'UTC'),
    projected_at    DateTime64(3, 'UTC') DEFAULT now64(3),
    province_code   LowCardinality(String),
    commune_code    LowCardinality(String),
    station_id      String,
    device_id       String,
    operator_id     String,
    channel         LowCardinality(String),
    phone           LowCardinality(String),
    detail          String,
    previous_hash   String,
    hash            String,
    kafka_partition UInt16,
    kafka_offset    UInt64,
    topic_id        UUID,
    actor           String
)
ENGINE = MergeTree
ORDER BY (account_id, sequence)
SETTINGS index_granularity = 1024;

-- Read models made before topic ids were recorded get the column (all zeros: unknown).
ALTER TABLE {db}.audit_events ADD COLUMN IF NOT EXISTS topic_id UUID AFTER kafka_offset;

-- Access records (history_read) from the restricted topic <topic>.access, same columns.
CREATE TABLE IF NOT EXISTS {db}.access_events AS {db}.audit_events;

-- The sealed personal number is part of what a Merkle leaf commits to (schemas/leaf.py): read
-- models made before it was kept get the column (empty: such rows no longer verify; rebuild).
ALTER TABLE {db}.audit_events ADD COLUMN IF NOT EXISTS sealed_citizen_id String AFTER position;
ALTER TABLE {db}.access_events ADD COLUMN IF NOT EXISTS sealed_citizen_id String AFTER position;

-- Schema v3: the principal whose command caused the event, shown to the auditor and committed
-- to by its Merkle leaf ('' when none was recorded: older events, v2 records, access records,
-- whose reader is in `detail`). Read models made before it get the column, empty: their rows
-- recorded with an actor fail their proofs until rebuilt from the topic (which has it).
ALTER TABLE {db}.audit_events ADD COLUMN IF NOT EXISTS actor String AFTER topic_id;
ALTER TABLE {db}.access_events ADD COLUMN IF NOT EXISTS actor String AFTER topic_id;

-- The row as the auditor is shown it, packed in one column (a JSON array of the columns in
-- projections/audit.py HISTORY_COLUMNS order), computed by the engine on insert and again by any
-- UPDATE of a column it packs: a history read touches the key and this column, in granules of
-- 1,024 rows, instead of nineteen columns of 8,192 (read models made before this setting keep
-- 8,192 until rebuilt; their older parts compute the column when read).
ALTER TABLE {db}.audit_events ADD COLUMN IF NOT EXISTS shown String MATERIALIZED
    formatRowNoNewline('JSONCompactEachRow', event_id, event_type, account_id, sequence,
        position, sealed_citizen_id, occurred_at, recorded_at, province_code, commune_code,
        station_id, device_id, operator_id, channel, phone, detail, previous_hash, hash, actor)
    CODEC(ZSTD(1));
ALTER TABLE {db}.access_events ADD COLUMN IF NOT EXISTS shown String MATERIALIZED
    formatRowNoNewline('JSONCompactEachRow', event_id, event_type, account_id, sequence,
        position, sealed_citizen_id, occurred_at, recorded_at, province_code, commune_code,
        station_id, device_id, operator_id, channel, phone, detail, previous_hash, hash, actor)
    CODEC(ZSTD(1));

-- One row per rebuild; the latest says whether the read models hold the whole topic, or
-- were rebuilt after events had been deleted from it (accepted loss: marked incomplete).
CREATE TABLE IF NOT EXISTS {db}.rebuilds
(
    rebuilt_at      DateTime64(3, 'UTC') DEFAULT now64(3),
    topic_id        UUID,
    complete        UInt8,
    missing_offsets UInt64
)
ENGINE = MergeTree
ORDER BY rebuilt_at;
