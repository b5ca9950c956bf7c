-- Facts about the database itself. `master_key_check`: a constant sealed under the master
-- key by the first node, so that a node started with another key is refused at once rather
-- than failing on the first sealed value it reads (or sealing new values under a key the
-- others cannot open).
CREATE TABLE confidant_meta (
    key    text PRIMARY KEY,
    value  bytea NOT NULL
);
