-- Golden records: each source's latest value of a trait is kept (one row per profile, key and
-- source), so that survivorship rules (most recent, most trusted source, most complete) can
-- choose among them and the lineage of every value stays visible.
CREATE TABLE traits_by_source (
    profile_id  INTEGER NOT NULL REFERENCES profiles(id),
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,                 -- JSON
    ts          INTEGER NOT NULL,
    source_id   INTEGER NOT NULL REFERENCES sources(id),
    message_id  TEXT NOT NULL,
    PRIMARY KEY (profile_id, key, source_id)
) WITHOUT ROWID;
INSERT INTO traits_by_source SELECT profile_id, key, value, ts, source_id, message_id FROM traits;
DROP TABLE traits;
ALTER TABLE traits_by_source RENAME TO traits;
