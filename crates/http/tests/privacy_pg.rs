//! The tests of `privacy.rs`, again on PostgreSQL (see `common`).

#[path = "privacy.rs"]
mod suite;
