//! The tests of `rights.rs`, again on PostgreSQL (see `common`).

#[path = "rights.rs"]
mod suite;
