//! Confidant's domain: the types and rules that everything else builds on.
//!
//! Layout:
//! - [`ids`]: parsed identifiers (email, E.164 phone, profile id). Built once at the edge.
//! - [`time`]: timestamp parsing and Segment's clock-skew correction.
//! - [`normalise`]: normalisation and validation of imported fields, with reason codes.
//! - [`message`]: a Segment-spec message, validated into a [`message::ParsedMessage`].
//! - [`identity`]: merge protection and the pure planning of identity stitching.
//! - [`config`]: the typed configuration, decoded with every problem reported at once.
//! - [`privacy`]: purposes, categories, the tracking plan; minimisation and lawfulness.
//! - [`audit`]: the hash chain shared by the audit log and the consent ledger.
//! - [`crypto`]: AES-256-GCM sealing of sensitive values under per-subject keys.
//! - [`audience`]: the audience rule language: parsing with positions, evaluation on facts.
//!
//! This crate does no IO: no files, no sockets, no clock reads except where a caller passes
//! "now" in. It knows nothing of SQL, HTTP or the command line.

pub mod audience;
pub mod config;
pub mod identity;
pub mod ids;
pub mod message;
pub mod normalise;
pub mod privacy;
pub mod audit;
pub mod crypto;
pub mod template;
pub mod time;
