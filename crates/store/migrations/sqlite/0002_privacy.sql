-- The data category of each stored event (from the tracking plan), for retention.
ALTER TABLE events ADD COLUMN category TEXT;

-- The minimisation report: fields dropped at the door, per source, event and field. Field
-- names that look like personal data are stored redacted.
CREATE TABLE minimisation_counts (
    source_id  INTEGER NOT NULL REFERENCES sources(id),
    event      TEXT NOT NULL,                  -- event name, or the message type
    field      TEXT NOT NULL,
    reason     TEXT NOT NULL,                  -- undeclared | no_legal_basis | a rejection code
    count      INTEGER NOT NULL,
    first_at   INTEGER NOT NULL,
    last_at    INTEGER NOT NULL,
    PRIMARY KEY (source_id, event, field, reason)
) WITHOUT ROWID;

-- The consent ledger, hash-chained (see core::audit). The state of a subject is derived from
-- its receipts. On erasure, everything that could identify the subject (profile, identifier,
-- evidence, salt) is cleared; digest and hashes stay so that the chain still verifies.
CREATE TABLE consent_receipts (
    seq              INTEGER PRIMARY KEY,
    receipt_id       TEXT NOT NULL UNIQUE,
    profile_id       INTEGER REFERENCES profiles(id),
    purpose          TEXT NOT NULL,
    scope            TEXT NOT NULL DEFAULT '',     -- an advertising category, or ''
    granted          INTEGER NOT NULL,
    at               INTEGER NOT NULL,             -- ms, truncated to the second
    method           TEXT NOT NULL,                -- banner | api | segment_context | tcf | gpc | dsr | unsubscribe
    notice_version   TEXT,
    notice_sha256    TEXT,
    source_id        INTEGER REFERENCES sources(id),
    identifier_kind  INTEGER,
    identifier       TEXT,
    evidence         TEXT,                         -- JSON: truncated IP, user agent, TC string
    salt             BLOB,
    erased           INTEGER NOT NULL DEFAULT 0,
    digest           BLOB NOT NULL,
    prev_hash        BLOB NOT NULL,
    hash             BLOB NOT NULL
);
CREATE INDEX consent_receipts_profile ON consent_receipts(profile_id) WHERE profile_id IS NOT NULL;

-- Art. 18 restriction, per profile.
CREATE TABLE subject_flags (
    profile_id     INTEGER PRIMARY KEY REFERENCES profiles(id),
    restricted_at  INTEGER NOT NULL,
    restricted_by  TEXT NOT NULL
);

-- Rights requests. The subject is referred to by profile (cleared on erasure) and by a keyed
-- hash of the identifier given (never the identifier itself).
CREATE TABLE dsr_requests (
    id            INTEGER PRIMARY KEY,
    receipt_id    TEXT NOT NULL UNIQUE,
    kind          TEXT NOT NULL,               -- access | rectification | erasure | restriction | objection
    status        TEXT NOT NULL,               -- received | completed | refused | no_data
    profile_id    INTEGER REFERENCES profiles(id),
    subject_ref   TEXT NOT NULL,               -- hex keyed hash of the identifier
    actor         TEXT NOT NULL,
    channel       TEXT NOT NULL,               -- cli | api | privacy_centre
    requested_at  INTEGER NOT NULL,
    deadline      INTEGER NOT NULL,            -- one month after the request (Art. 12(3))
    completed_at  INTEGER,
    detail        TEXT NOT NULL DEFAULT '{}'   -- JSON, never personal data
);
CREATE INDEX dsr_requests_profile ON dsr_requests(profile_id) WHERE profile_id IS NOT NULL;

-- Erased identifiers, as keyed hashes: re-applied after a backup is restored; with suppress,
-- collection about them is refused.
CREATE TABLE tombstones (
    hash       BLOB PRIMARY KEY,
    erased_at  INTEGER NOT NULL,
    suppress   INTEGER NOT NULL
) WITHOUT ROWID;

-- The audit log, hash-chained. No personal data: subjects are pseudonymous profile ids.
CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY,
    at         INTEGER NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    subject    TEXT,
    detail     TEXT NOT NULL,
    prev_hash  BLOB NOT NULL,
    hash       BLOB NOT NULL
);
CREATE INDEX audit_log_subject ON audit_log(subject) WHERE subject IS NOT NULL;

-- Per-subject data keys, wrapped by the master key. Erasure deletes the row (crypto-shredding).
CREATE TABLE subject_keys (
    profile_id  INTEGER PRIMARY KEY REFERENCES profiles(id),
    wrapped     BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);

-- The source of changes made by the rights desk (rectifications).
INSERT INTO sources(name, created_at) VALUES ('(rights desk)', 0);
