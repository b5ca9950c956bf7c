//! Types of the privacy side of the store: the consent ledger, rights requests, erasure,
//! retention, the minimisation report and the audit log.

use std::collections::BTreeMap;

use confidant_core::ids::{IdKind, Identifier, ProfileId};
use confidant_core::time::Millis;
use serde_json::Value;

use crate::{ConflictView, EventView, MergeView, ProfileView};

/// A consent decision to record.
#[derive(Clone, Debug)]
pub struct ReceiptInput {
    pub purpose: String,
    /// An advertising category, or empty.
    pub scope: String,
    pub granted: bool,
    /// Truncated to the second by the store.
    pub at: Millis,
    pub method: String,
    pub notice_version: Option<String>,
    pub notice_sha256: Option<String>,
    /// Truncated IP, user agent, TC string: never a full IP address.
    pub evidence: Value,
}

/// Receipts for one subject, named by the identifiers the caller knows.
#[derive(Clone, Debug)]
pub struct ConsentWrite {
    pub source_id: Option<i64>,
    pub identifiers: Vec<Identifier>,
    pub receipts: Vec<ReceiptInput>,
    /// Record only receipts that change the subject's current decision (for consent carried
    /// on every event, so that the ledger does not grow by one receipt per event).
    pub only_changes: bool,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ReceiptView {
    pub seq: i64,
    pub receipt_id: String,
    pub purpose: String,
    pub scope: String,
    pub granted: bool,
    pub at: Millis,
    pub method: String,
    pub notice_version: Option<String>,
    pub notice_sha256: Option<String>,
    pub source: Option<String>,
    pub identifier_kind: Option<&'static str>,
    pub evidence: Value,
    pub hash: String,
}

#[derive(Clone, Debug)]
pub struct ConsentRecorded {
    pub profile: ProfileId,
    /// The receipts written (fewer than asked with `only_changes`).
    pub receipts: Vec<ReceiptView>,
}

/// A receipt and every identifier its subject holds now, for the in-memory consent book.
#[derive(Clone, Debug)]
pub struct ConsentChange {
    pub seq: i64,
    pub identifiers: Vec<Identifier>,
    pub purpose: String,
    pub scope: String,
    pub granted: bool,
    pub at: Millis,
}

/// A subject's decisions (latest per purpose and scope) and restriction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectRecord {
    /// The root of the subject's tree (the live profile).
    pub root: ProfileId,
    pub decisions: Vec<(String, String, bool, Millis)>,
    pub restricted: bool,
}

/// Fields dropped at the door, to add to the minimisation report.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropKey {
    pub event: String,
    pub field: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MinimisationRow {
    pub source: String,
    pub event: String,
    pub field: String,
    pub reason: String,
    pub count: i64,
    pub first_at: Millis,
    pub last_at: Millis,
}

/// An entry to append to the audit log. Never personal data: the subject is a profile id.
#[derive(Clone, Debug)]
pub struct AuditEntry {
    pub actor: String,
    pub action: String,
    pub subject: Option<ProfileId>,
    pub detail: Value,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct AuditView {
    pub seq: i64,
    pub at: Millis,
    pub actor: String,
    pub action: String,
    pub subject: Option<String>,
    pub detail: Value,
    pub hash: String,
}

#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub subject: Option<ProfileId>,
    pub since: Option<Millis>,
    pub until: Option<Millis>,
    /// Entries strictly before this sequence number (paging, newest first).
    pub before: Option<i64>,
    pub limit: usize,
}

/// What a chain verification found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainReport {
    pub entries: u64,
    pub head: String,
    /// `None` when intact.
    pub broken: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DsrKind {
    Access,
    Rectification,
    Erasure,
    Restriction,
    Objection,
}

impl DsrKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DsrKind::Access => "access",
            DsrKind::Rectification => "rectification",
            DsrKind::Erasure => "erasure",
            DsrKind::Restriction => "restriction",
            DsrKind::Objection => "objection",
        }
    }
    pub fn from_name(s: &str) -> Option<DsrKind> {
        [DsrKind::Access, DsrKind::Rectification, DsrKind::Erasure, DsrKind::Restriction, DsrKind::Objection].into_iter().find(|k| k.as_str() == s)
    }
}

#[derive(Clone, Debug)]
pub struct DsrInput {
    pub kind: DsrKind,
    pub profile: Option<ProfileId>,
    pub subject_ref: String,
    pub actor: String,
    pub channel: String,
    pub requested_at: Millis,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DsrView {
    pub id: i64,
    pub receipt_id: String,
    pub kind: DsrKind,
    pub status: String,
    pub profile: Option<String>,
    pub subject_ref: String,
    pub actor: String,
    pub channel: String,
    pub requested_at: Millis,
    pub deadline: Millis,
    pub completed_at: Option<Millis>,
    pub overdue: bool,
    pub detail: Value,
}

/// An erasure: the subject's whole profile tree.
#[derive(Clone, Debug)]
pub struct ErasureRequest {
    pub profile: ProfileId,
    /// Key of the tombstone hashes (never stored).
    pub tombstone_key: [u8; 32],
    /// Also refuse future collection about these identifiers.
    pub suppress: bool,
    /// Leave tombstones (erasure by request); retention leaves none.
    pub tombstones: bool,
    /// The request to complete in the same transaction.
    pub dsr: Option<i64>,
    pub audit: AuditEntry,
}

/// What an erasure removed. `identifiers` is for the caller's memory only (the consent book),
/// never to be stored or printed.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ErasureReport {
    pub profiles: u64,
    pub identities: u64,
    pub events: u64,
    pub traits: u64,
    pub merges: u64,
    pub conflicts: u64,
    pub receipts_cleared: u64,
    pub keys_destroyed: u64,
    pub tombstones: u64,
    pub quarantined_rows: u64,
    /// Audience memberships and their history.
    pub audience_rows: u64,
    /// Delivery log rows, dead letters, destination records, privacy-centre codes and sessions.
    pub activation_rows: u64,
    /// Destinations the erasure was forwarded to.
    pub forwarded: u64,
    #[serde(skip)]
    pub identifiers: Vec<Identifier>,
}

/// Everything held about a subject (Art. 15 and 20).
#[derive(Debug)]
pub struct SubjectExport {
    pub profile: ProfileView,
    pub events: Vec<EventView>,
    pub receipts: Vec<ReceiptView>,
    pub merges: Vec<MergeView>,
    pub conflicts: Vec<ConflictView>,
    pub restricted: Option<(Millis, String)>,
    pub requests: Vec<DsrView>,
}

/// How long a subject's data may be kept, decided by the caller from the subject's decisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionRule {
    /// Erase the whole subject when inactive longer than this many days.
    pub subject_days: Option<u32>,
    /// Per event category: `Some(days)` deletes older events; `None` deletes them all
    /// (no lawful purpose covers them any more). Categories not listed are kept.
    pub categories: BTreeMap<String, Option<u32>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RetentionReport {
    pub dry_run: bool,
    pub subjects_examined: u64,
    pub subjects_erased: u64,
    pub events_deleted: u64,
    pub events_by_category: BTreeMap<String, u64>,
    /// PostgreSQL: month partitions of events dropped whole (older than any retention).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partitions_dropped: Vec<String>,
}

/// Live counts for the register of processing.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RegisterCounts {
    pub subjects: u64,
    /// Profiles holding data of each category (traits and events).
    pub subjects_by_category: BTreeMap<String, u64>,
    /// Source name → events stored.
    pub events_by_source: BTreeMap<String, u64>,
    pub receipts: u64,
    pub requests: u64,
}

/// The kind names as stored (`kind` column).
pub fn kind_name(k: IdKind) -> &'static str {
    k.as_str()
}

/// A row of an import that failed validation.
#[derive(Clone, Debug)]
pub struct QuarantineRow {
    pub line: u64,
    pub field: String,
    pub reason: String,
    /// The row as read (JSON).
    pub raw: String,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct QuarantineView {
    pub source: String,
    pub file: String,
    pub line: u64,
    pub field: String,
    pub reason: String,
    pub raw: String,
    pub at: Millis,
}

/// Data quality per source and trait (see `Store::quality`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct QualityField {
    pub field: String,
    /// Profiles holding a value of this field from this source.
    pub present: u64,
    /// present / profiles the source has data for.
    pub completeness: f64,
    /// Distinct values / present; `None` for encrypted values (not comparable at rest).
    pub uniqueness: Option<f64>,
    /// When the newest value from this source was recorded.
    pub last_updated: Millis,
    /// Import rows of this source in quarantine for an invalid value of this field.
    pub invalid: u64,
    /// present / (present + invalid).
    pub validity: f64,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct QualitySource {
    pub source: String,
    /// Profiles the source has sent data about.
    pub profiles: u64,
    pub events: u64,
    pub last_event: Option<Millis>,
    /// Messages from this source that joined two profiles into one (duplicates found).
    pub merges: u64,
    /// Import rows in quarantine, by field and reason.
    pub quarantined: BTreeMap<String, u64>,
    /// Messages refused at ingestion, by reason.
    pub rejected: BTreeMap<String, u64>,
    pub fields: Vec<QualityField>,
}

/// A live profile's values for probabilistic matching (golden by recency; decrypted).
#[derive(Clone, Debug)]
pub struct MatchCandidate {
    pub profile: ProfileId,
    /// Key → value, for the keys asked (traits, and `email`/`phone` from identities).
    pub values: BTreeMap<String, String>,
}

/// What became of a probable match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchDecision {
    Merged,
    Queued,
    /// Already one profile, already reviewed, or separated by a person (unmerge, rejection).
    AlreadyDone,
    /// Merge protection: both profiles hold a user id (queued for review instead).
    Protected,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ReviewView {
    pub id: i64,
    pub at: Millis,
    pub profile_a: String,
    pub profile_b: String,
    pub probability: f64,
    pub evidence: Value,
    pub status: String,
    pub decided_at: Option<Millis>,
    pub decided_by: Option<String>,
}

/// A `track` event read for a job, with the root of its subject's tree.
#[derive(Clone, Debug)]
pub struct NamedEvent {
    pub profile: ProfileId,
    pub timestamp: Millis,
    pub event: String,
    pub body: serde_json::Value,
}

/// A trait computed by a model (RFM, lifetime value, churn), with when it was computed.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ComputedTrait {
    pub key: String,
    pub value: serde_json::Value,
    pub computed_at: Millis,
}
