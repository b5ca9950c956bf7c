-- Traits computed by the analytics models (RFM, lifetime value, churn), on the root of each
-- profile tree. A run replaces every key it computes; erasure and objection delete them.
CREATE TABLE computed_traits (
    profile_id   INTEGER NOT NULL REFERENCES profiles(id),
    key          TEXT NOT NULL,
    value        TEXT NOT NULL,
    computed_at  INTEGER NOT NULL,
    PRIMARY KEY (profile_id, key)
);
