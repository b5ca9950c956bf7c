//! The tests of `activation.rs`, again on PostgreSQL (see `common`).

#[path = "activation.rs"]
mod suite;
