-- The intake journal (sqlite/intake.rs): the last journal record whose batch is applied,
-- written in the same transaction as the batch. On start, every later record is applied.
CREATE TABLE intake_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    applied_seq INTEGER NOT NULL
);
INSERT INTO intake_state (id, applied_seq) VALUES (1, 0);
