//! The tests of `import.rs`, again on PostgreSQL (see `common`).

#[path = "import.rs"]
mod suite;
