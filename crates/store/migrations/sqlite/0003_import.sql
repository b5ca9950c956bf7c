-- Rows of imports that failed validation, with the reason, until a corrected file is
-- imported again (which replaces the rows of that source and file). `raw` is the row as read:
-- personal data, removed by erasure when it holds one of the subject's identifiers.
CREATE TABLE quarantine (
    id         INTEGER PRIMARY KEY,
    source_id  INTEGER NOT NULL REFERENCES sources(id),
    file       TEXT NOT NULL,
    line       INTEGER NOT NULL,
    field      TEXT NOT NULL,
    reason     TEXT NOT NULL,
    raw        TEXT NOT NULL,
    at         INTEGER NOT NULL
);
CREATE INDEX quarantine_source_file ON quarantine(source_id, file);
