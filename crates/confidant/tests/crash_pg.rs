//! The tests of `crash.rs`, again on PostgreSQL (see `common`).

#[path = "crash.rs"]
mod suite;
