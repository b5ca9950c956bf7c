-- PostgreSQL: the foundation, as 0001_foundation.sql is for SQLite, in PostgreSQL's terms.
-- Times are milliseconds since the epoch (bigint), as in SQLite, so that both backends share
-- every query's meaning. Events are partitioned by month of `ts` so that retention drops
-- whole partitions; `confidant_event_partition(ts)` creates the month a row needs.

CREATE TABLE sources (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  bigint NOT NULL
);

CREATE TABLE profiles (
    id           bigint PRIMARY KEY,                  -- random 63-bit, shown as 16 hex digits
    created_at   bigint NOT NULL,
    merged_into  bigint REFERENCES profiles(id),
    merge_id     bigint
);
CREATE INDEX profiles_merged_into ON profiles(merged_into) WHERE merged_into IS NOT NULL;

-- kind: 0 user_id, 1 email, 2 phone, 3 anonymous_id.
CREATE TABLE identities (
    kind        smallint NOT NULL,
    value       text NOT NULL,
    profile_id  bigint NOT NULL REFERENCES profiles(id),
    created_at  bigint NOT NULL,
    source_id   bigint NOT NULL REFERENCES sources(id),
    message_id  text NOT NULL,
    PRIMARY KEY (kind, value)
);
CREATE INDEX identities_profile ON identities(profile_id);

-- Every message stored, as received. `seq` is the arrival order across partitions.
CREATE TABLE events (
    seq          bigint GENERATED ALWAYS AS IDENTITY,
    source_id    bigint NOT NULL,
    message_id   text NOT NULL,
    profile_id   bigint NOT NULL,
    type         text NOT NULL,
    event        text,
    ts           bigint NOT NULL,
    received_at  bigint NOT NULL,
    body         text NOT NULL,
    category     text,                                -- the data category, for retention
    PRIMARY KEY (ts, seq)
) PARTITION BY RANGE (ts);
CREATE INDEX events_profile_ts ON events(profile_id, ts, seq);
CREATE INDEX events_seq ON events(seq);

-- A partitioned table cannot hold a unique index without the partition key: deduplication
-- by (source, messageId) lives in its own table, written in the same transaction.
CREATE TABLE event_ids (
    source_id   bigint NOT NULL REFERENCES sources(id),
    message_id  text NOT NULL,
    ts          bigint NOT NULL,
    PRIMARY KEY (source_id, message_id)
);

-- Creates (once, safely under concurrency) the month partition that holds `at` (ms).
CREATE FUNCTION confidant_event_partition(at bigint) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    month_start timestamptz := date_trunc('month', to_timestamp(at / 1000.0) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    month_end   timestamptz := month_start + interval '1 month';
    name        text := 'events_' || to_char(month_start AT TIME ZONE 'UTC', 'YYYY_MM');
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(name));
    IF to_regclass(name) IS NULL THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%s) TO (%s)',
                       name,
                       (extract(epoch FROM month_start) * 1000)::bigint,
                       (extract(epoch FROM month_end) * 1000)::bigint);
    END IF;
    RETURN name;
END $$;

CREATE TABLE traits (
    profile_id  bigint NOT NULL REFERENCES profiles(id),
    key         text NOT NULL,
    value       text NOT NULL,
    ts          bigint NOT NULL,
    source_id   bigint NOT NULL REFERENCES sources(id),
    message_id  text NOT NULL,
    PRIMARY KEY (profile_id, key, source_id)          -- each source's latest value (lineage)
);

CREATE TABLE merges (
    id            bigserial PRIMARY KEY,
    at            bigint NOT NULL,
    into_profile  bigint NOT NULL REFERENCES profiles(id),
    from_profile  bigint NOT NULL REFERENCES profiles(id),
    rule          text NOT NULL,
    evidence      text NOT NULL,
    source_id     bigint REFERENCES sources(id),
    message_id    text,
    undone_at     bigint,
    undone_by     text
);
CREATE INDEX merges_into ON merges(into_profile);
CREATE INDEX merges_from ON merges(from_profile);

CREATE TABLE merge_blocks (
    profile_a  bigint NOT NULL REFERENCES profiles(id),
    profile_b  bigint NOT NULL REFERENCES profiles(id),
    merge_id   bigint NOT NULL REFERENCES merges(id),
    PRIMARY KEY (profile_a, profile_b)
);
CREATE INDEX merge_blocks_b ON merge_blocks(profile_b);

CREATE TABLE identity_conflicts (
    id          bigserial PRIMARY KEY,
    at          bigint NOT NULL,
    profile_id  bigint NOT NULL REFERENCES profiles(id),
    other_id    bigint REFERENCES profiles(id),
    kind        smallint NOT NULL,
    reason      text NOT NULL,
    source_id   bigint NOT NULL REFERENCES sources(id),
    message_id  text NOT NULL
);
CREATE INDEX identity_conflicts_profile ON identity_conflicts(profile_id);

-- Fields dropped by minimisation, per source, event, field and reason.
CREATE TABLE minimisation_counts (
    source_id  bigint NOT NULL REFERENCES sources(id),
    event      text NOT NULL,
    field      text NOT NULL,
    reason     text NOT NULL,
    count      bigint NOT NULL,
    first_at   bigint NOT NULL,
    last_at    bigint NOT NULL,
    PRIMARY KEY (source_id, event, field, reason)
);

CREATE TABLE ingest_counts (
    day        bigint NOT NULL,
    source_id  bigint NOT NULL REFERENCES sources(id),
    outcome    text NOT NULL,
    count      bigint NOT NULL,
    PRIMARY KEY (day, source_id, outcome)
);

-- Background jobs run once across the nodes: a job is taken by the node that holds its
-- lease (`FOR UPDATE SKIP LOCKED` on the row, then `leased_until`).
CREATE TABLE job_leases (
    job           text PRIMARY KEY,
    holder        text,
    leased_until  bigint NOT NULL DEFAULT 0
);
