//! The tests of `api.rs`, again on PostgreSQL (see `common`).

#[path = "api.rs"]
mod suite;
