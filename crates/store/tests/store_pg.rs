//! The tests of `store.rs`, on PostgreSQL.

#[path = "store.rs"]
mod suite;
