//! The tests of `personalisation.rs`, again on PostgreSQL (see `common`).

#[path = "personalisation.rs"]
mod suite;
