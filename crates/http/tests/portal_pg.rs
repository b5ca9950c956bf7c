//! The tests of `portal.rs`, again on PostgreSQL (see `common`).

#[path = "portal.rs"]
mod suite;
