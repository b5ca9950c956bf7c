-- Activation: email campaigns and triggered messages, their delivery log, webhook
-- destinations with their dead letters, and the rights requests forwarded to them.
-- Erasure deletes a subject's rows in deliveries, destination_subjects and destination_dead.

-- A campaign sends one message per member of an audience (`trigger` NULL), or, for a triggered
-- message, one per occurrence of an event not followed by another within a delay.
CREATE TABLE campaigns (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    audience      TEXT NOT NULL,
    purpose       TEXT NOT NULL,
    content       TEXT NOT NULL,        -- JSON: subject and body per language, recommendations
    trigger       TEXT,                 -- JSON: {"event", "unless", "within_seconds"}
    scheduled_at  INTEGER,
    status        TEXT NOT NULL,        -- scheduled | sending | interrupted | sent | active | paused
    created_at    INTEGER NOT NULL,
    created_by    TEXT NOT NULL,
    started_at    INTEGER,
    finished_at   INTEGER,
    cursor        INTEGER NOT NULL DEFAULT 0   -- triggers: the last events.seq looked at
);

-- The delivery log: one row per person and campaign (and occurrence, for triggers), whether
-- sent, suppressed (with the reason) or failed. `token` is the random id of the message's
-- unsubscribe link.
CREATE TABLE deliveries (
    id               INTEGER PRIMARY KEY,
    campaign_id      INTEGER NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
    profile_id       INTEGER NOT NULL,
    occurrence       TEXT NOT NULL DEFAULT '',
    status           TEXT NOT NULL,     -- sending | sent | failed | suppressed
    reason           TEXT,
    at               INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    token            BLOB UNIQUE,
    unsubscribed_at  INTEGER,
    UNIQUE (campaign_id, profile_id, occurrence)
);
CREATE INDEX deliveries_profile ON deliveries(profile_id, at);
CREATE INDEX deliveries_campaign ON deliveries(campaign_id, status);

CREATE TABLE destinations (
    id               INTEGER PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    url              TEXT NOT NULL,
    secret           TEXT NOT NULL,
    purposes         TEXT NOT NULL,     -- JSON array of purpose ids
    events           TEXT,              -- JSON array of event names; NULL: every event
    audiences        INTEGER NOT NULL,  -- 1: audience changes are forwarded
    rate_per_second  REAL NOT NULL,
    timeout_ms       INTEGER NOT NULL,
    max_attempts     INTEGER NOT NULL,
    retry_base_ms    INTEGER NOT NULL,
    enabled          INTEGER NOT NULL DEFAULT 1,
    event_cursor     INTEGER NOT NULL,
    audience_cursor  INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    created_by       TEXT NOT NULL
);

-- Who each destination received data about: the recipients of Art. 17(2) and 19.
CREATE TABLE destination_subjects (
    destination_id  INTEGER NOT NULL REFERENCES destinations(id) ON DELETE CASCADE,
    profile_id      INTEGER NOT NULL,
    first_at        INTEGER NOT NULL,
    last_at         INTEGER NOT NULL,
    PRIMARY KEY (destination_id, profile_id)
) WITHOUT ROWID;
CREATE INDEX destination_subjects_profile ON destination_subjects(profile_id);

-- Deliveries that failed every attempt, kept for replay.
CREATE TABLE destination_dead (
    id               INTEGER PRIMARY KEY,
    destination_id   INTEGER NOT NULL REFERENCES destinations(id) ON DELETE CASCADE,
    profile_id       INTEGER,
    kind             TEXT NOT NULL,     -- event | audience
    idempotency_key  TEXT NOT NULL,
    payload          TEXT NOT NULL,
    attempts         INTEGER NOT NULL,
    last_error       TEXT NOT NULL,
    failed_at        INTEGER NOT NULL
);
CREATE INDEX destination_dead_destination ON destination_dead(destination_id, id);
CREATE INDEX destination_dead_profile ON destination_dead(profile_id);

-- Rights requests forwarded to the destinations that had the subject's data. The payload
-- carries the identifiers the destination needs and is cleared once delivered; the row stays
-- as the receipt, naming the subject only by a keyed hash.
CREATE TABLE rights_forwards (
    id               INTEGER PRIMARY KEY,
    destination_id   INTEGER NOT NULL REFERENCES destinations(id) ON DELETE CASCADE,
    dsr_id           INTEGER,
    kind             TEXT NOT NULL,     -- erasure | rectification | objection | restriction
    subject_ref      TEXT NOT NULL,
    payload          TEXT,
    status           TEXT NOT NULL,     -- pending | delivered | dead
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_at          INTEGER NOT NULL,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    delivered_at     INTEGER,
    response_status  INTEGER
);
CREATE INDEX rights_forwards_due ON rights_forwards(status, next_at);
CREATE INDEX rights_forwards_dsr ON rights_forwards(dsr_id);
