-- The privacy centre: one-time sign-in codes sent by email and the sessions they open.
-- Both name the subject (profile_id) and hold the address proven; erasure deletes them with
-- the rest of the subject's rows. Expired rows are swept when new codes are issued.

-- A code is never stored: `code_hash` is HMAC(key, id || code), `id` 16 random bytes that
-- the browser holds while the person types the code. One use, a few attempts.
CREATE TABLE portal_codes (
    id          BLOB PRIMARY KEY,
    profile_id  INTEGER NOT NULL,
    email       TEXT NOT NULL,
    code_hash   BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    used_at     INTEGER
);
CREATE INDEX portal_codes_profile ON portal_codes(profile_id, created_at);

-- A session is known by the SHA-256 of its cookie; `csrf` is the token its forms carry.
CREATE TABLE portal_sessions (
    token_hash  BLOB PRIMARY KEY,
    profile_id  INTEGER NOT NULL,
    email       TEXT NOT NULL,
    csrf        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX portal_sessions_profile ON portal_sessions(profile_id);
