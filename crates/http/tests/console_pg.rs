//! The tests of `console.rs`, again on PostgreSQL (see `common`).

#[path = "console.rs"]
mod suite;
