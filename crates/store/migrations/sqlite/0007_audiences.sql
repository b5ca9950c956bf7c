-- Audiences: a rule over traits, computed traits and events, bound to a purpose. Members are
-- the roots of profile trees at evaluation time; the history records every join and leave.
-- Erasure deletes a subject's rows in both member tables.
CREATE TABLE audiences (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    purpose       TEXT NOT NULL,
    rule          TEXT NOT NULL,
    description   TEXT,
    created_at    INTEGER NOT NULL,
    created_by    TEXT NOT NULL,
    updated_at    INTEGER NOT NULL,
    evaluated_at  INTEGER,
    size          INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE audience_members (
    audience_id  INTEGER NOT NULL REFERENCES audiences(id) ON DELETE CASCADE,
    profile_id   INTEGER NOT NULL,
    since        INTEGER NOT NULL,
    PRIMARY KEY (audience_id, profile_id)
) WITHOUT ROWID;
CREATE INDEX audience_members_profile ON audience_members(profile_id);
CREATE TABLE audience_history (
    seq          INTEGER PRIMARY KEY,
    audience_id  INTEGER NOT NULL REFERENCES audiences(id) ON DELETE CASCADE,
    profile_id   INTEGER NOT NULL,
    at           INTEGER NOT NULL,
    change       TEXT NOT NULL,   -- joined | left
    reason       TEXT NOT NULL    -- rule | consent | created | updated
);
CREATE INDEX audience_history_audience ON audience_history(audience_id, seq);
CREATE INDEX audience_history_profile ON audience_history(profile_id);
CREATE INDEX events_type_event_ts ON events(event, ts) WHERE type = 'track';
