//! The tests of `campaign.rs`, again on PostgreSQL (see `common`).

#[path = "campaign.rs"]
mod suite;
