-- Probable duplicates found by probabilistic matching, in the band of doubt: a person decides.
-- `evidence` holds the comparison levels and weights, never the values.
CREATE TABLE match_reviews (
    id           INTEGER PRIMARY KEY,
    at           INTEGER NOT NULL,
    profile_a    INTEGER NOT NULL REFERENCES profiles(id),
    profile_b    INTEGER NOT NULL REFERENCES profiles(id),
    probability  REAL NOT NULL,
    evidence     TEXT NOT NULL,
    status       TEXT NOT NULL,            -- open | merged | rejected
    decided_at   INTEGER,
    decided_by   TEXT
);
CREATE UNIQUE INDEX match_reviews_pair ON match_reviews(profile_a, profile_b);
CREATE INDEX match_reviews_b ON match_reviews(profile_b);
