//! The tests of `sdk.rs`, again on PostgreSQL (see `common`).

#[path = "sdk.rs"]
mod suite;
