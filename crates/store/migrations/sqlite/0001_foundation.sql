-- Sources of data (web shop, app, CRM import...). Write keys live in the configuration,
-- never here.
CREATE TABLE sources (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

-- One row per profile ever created. A profile merged into another keeps its row and points
-- at the profile that absorbed it (merged_into), so an unmerge only clears the pointer.
-- The root of a tree (merged_into IS NULL) is the live profile.
CREATE TABLE profiles (
    id           INTEGER PRIMARY KEY,          -- random 63-bit, shown as 16 hex digits
    created_at   INTEGER NOT NULL,             -- ms since epoch: first event time
    merged_into  INTEGER REFERENCES profiles(id),
    merge_id     INTEGER                       -- the merge that set merged_into
);
CREATE INDEX profiles_merged_into ON profiles(merged_into) WHERE merged_into IS NOT NULL;

-- The identity graph's nodes: each identifier belongs to the profile it was first attached
-- to. kind: 0 user_id, 1 email, 2 phone, 3 anonymous_id.
CREATE TABLE identities (
    kind        INTEGER NOT NULL,
    value       TEXT NOT NULL,
    profile_id  INTEGER NOT NULL REFERENCES profiles(id),
    created_at  INTEGER NOT NULL,
    source_id   INTEGER NOT NULL REFERENCES sources(id),
    message_id  TEXT NOT NULL,
    PRIMARY KEY (kind, value)
) WITHOUT ROWID;
CREATE INDEX identities_profile ON identities(profile_id);

-- Every message stored, as received (minus the write key). seq is the arrival order.
CREATE TABLE events (
    seq          INTEGER PRIMARY KEY,
    source_id    INTEGER NOT NULL REFERENCES sources(id),
    message_id   TEXT NOT NULL,
    profile_id   INTEGER NOT NULL REFERENCES profiles(id),
    type         TEXT NOT NULL,
    event        TEXT,
    ts           INTEGER NOT NULL,             -- corrected event time, ms
    received_at  INTEGER NOT NULL,
    body         TEXT NOT NULL
);
CREATE UNIQUE INDEX events_message ON events(source_id, message_id);
CREATE INDEX events_profile_ts ON events(profile_id, ts, seq);

-- Traits with provenance: for each profile of a tree and key, the latest value by event
-- time. The tree's view takes, per key, the latest across its profiles.
CREATE TABLE traits (
    profile_id  INTEGER NOT NULL REFERENCES profiles(id),
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,                 -- JSON
    ts          INTEGER NOT NULL,
    source_id   INTEGER NOT NULL REFERENCES sources(id),
    message_id  TEXT NOT NULL,
    PRIMARY KEY (profile_id, key)
) WITHOUT ROWID;

-- Append-only record of merges. An unmerge sets undone_at; rows are never deleted.
CREATE TABLE merges (
    id            INTEGER PRIMARY KEY,
    at            INTEGER NOT NULL,
    into_profile  INTEGER NOT NULL REFERENCES profiles(id),
    from_profile  INTEGER NOT NULL REFERENCES profiles(id),
    rule          TEXT NOT NULL,
    evidence      TEXT NOT NULL,               -- JSON
    source_id     INTEGER REFERENCES sources(id),
    message_id    TEXT,
    undone_at     INTEGER,
    undone_by     TEXT
);
CREATE INDEX merges_into ON merges(into_profile);
CREATE INDEX merges_from ON merges(from_profile);

-- Pairs of profiles separated by an unmerge: automatic stitching never joins them again.
CREATE TABLE merge_blocks (
    profile_a  INTEGER NOT NULL REFERENCES profiles(id),
    profile_b  INTEGER NOT NULL REFERENCES profiles(id),
    merge_id   INTEGER NOT NULL REFERENCES merges(id),
    PRIMARY KEY (profile_a, profile_b)
) WITHOUT ROWID;
CREATE INDEX merge_blocks_b ON merge_blocks(profile_b);

-- Merges refused by merge protection, with the rule that refused them.
CREATE TABLE identity_conflicts (
    id          INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    profile_id  INTEGER NOT NULL REFERENCES profiles(id),
    other_id    INTEGER REFERENCES profiles(id),
    kind        INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    source_id   INTEGER NOT NULL REFERENCES sources(id),
    message_id  TEXT NOT NULL
);
CREATE INDEX identity_conflicts_profile ON identity_conflicts(profile_id);

-- Durable ingestion counters per day, source and outcome (accepted, duplicate,
-- rejected:<reason>), so that rejections are counted across restarts.
CREATE TABLE ingest_counts (
    day        INTEGER NOT NULL,               -- days since epoch
    source_id  INTEGER NOT NULL REFERENCES sources(id),
    outcome    TEXT NOT NULL,
    count      INTEGER NOT NULL,
    PRIMARY KEY (day, source_id, outcome)
) WITHOUT ROWID;
