//! The tests of `browser.rs`, again on PostgreSQL (see `common`).

#[path = "browser.rs"]
mod suite;
