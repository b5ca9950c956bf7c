//! Confidant's storage. The only crate that knows SQL.
//!
//! [`Store`] is the one interface the rest of the product sees, with two backends behind
//! the same methods: embedded SQLite (`sqlite`) and PostgreSQL (`postgres`).
//!
//! SQLite layout: an intake journal acknowledges ingested batches once they are synced to
//! it; one writer thread owns the only writing connection, applies them in journal order and
//! runs every other write, committing whatever has queued up since its last commit in one
//! transaction (group commit), so concurrent clients never see "database is locked" and
//! throughput grows with load. Readers use a small pool of read-only connections, which WAL
//! lets run beside the writer; each read first waits until every acknowledged batch is applied.

pub mod activation;
pub mod audiences;
pub mod portal;
pub mod migrate;
pub mod postgres;
pub mod privacy;
mod shared;
pub mod sql;
mod sqlite;

/// The SQLite schema's migrations, in order: what a new database runs. For the benchmarks'
/// raw-insert baseline, which must write into the same tables and indexes as the store.
pub fn sqlite_migrations() -> &'static [&'static str] {
    sqlite::MIGRATIONS
}

use std::path::Path;

pub use confidant_core::identity::IdentityRules;
use confidant_core::ids::{IdKind, ProfileId};
use confidant_core::message::{RejectReason, SealedMessage};
use confidant_core::time::Millis;
pub use serde_json::value::RawValue;
use shared::Backend as _;

/// Errors by meaning. Messages never contain personal data.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store is shutting down")]
    ShuttingDown,
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("the database is at schema version {found}, newer than this binary supports ({supported}); run a newer Confidant")]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("cannot open the database: {0}")]
    Open(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("the database could not be synced to disk; writes are refused until a restart")]
    SyncFailed,
    #[error("the change is committed, but the write-ahead log could not be emptied ({0}); copies of erased pages may remain in it until the next checkpoint: run the erasure again when the database is less busy")]
    WalNotTruncated(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A PostgreSQL error, by message and SQLSTATE (never the row values of its detail).
    #[error("PostgreSQL: {0}")]
    Postgres(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Kept alive until an ingested batch is applied (see [`Store::ingest_holding`]).
pub type Hold = Box<dyn Send>;

/// Options of the SQLite backend.
#[derive(Clone)]
pub struct SqliteOptions {
    /// Most messages one transaction commits.
    pub max_commit_messages: usize,
    pub rules: IdentityRules,
    /// The master key that wraps every subject's data key.
    pub master_key: [u8; 32],
}

impl std::fmt::Debug for SqliteOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteOptions").field("max_commit_messages", &self.max_commit_messages).field("master_key", &"<secret>").finish()
    }
}

/// One source's accepted messages and the rejections to count, written in one commit.
pub struct IngestBatch {
    pub source_id: i64,
    pub messages: Vec<SealedMessage>,
    pub rejected: Vec<RejectReason>,
    /// Fields dropped by minimisation, counted in the same commit.
    pub drops: Vec<(privacy::DropKey, u64)>,
}

/// What a committed batch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestReport {
    pub stored: usize,
    /// Messages whose `messageId` was already stored for this source: acknowledged, not stored.
    pub duplicates: usize,
    /// For each message of the batch, in order: `true` when it was a duplicate.
    pub duplicate_flags: Vec<bool>,
    /// Profiles made, merges done and merges refused. Counted where a batch is applied
    /// before it is acknowledged (PostgreSQL); on SQLite the intake journal acknowledges
    /// first and these stay 0 (the merge log and conflict list have the facts).
    pub profiles_created: usize,
    pub merges: usize,
    pub conflicts: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct IdentityView {
    pub kind: IdKind,
    pub value: String,
    /// The profile of the tree that holds it (differs from the root after a merge).
    pub profile: ProfileId,
    pub created_at: Millis,
    pub source: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TraitView {
    pub key: String,
    pub value: serde_json::Value,
    pub timestamp: Millis,
    pub source: String,
    pub message_id: String,
}

/// A tree's golden record from every row of `traits` (each with whether it is the root's
/// own): per key the latest value across the tree, the root's row winning on equal times,
/// sorted by key; and every row as the lineage. The same on every backend.
pub(crate) fn golden_traits(rows: impl IntoIterator<Item = (TraitView, bool)>) -> (Vec<TraitView>, Vec<TraitView>) {
    let mut latest: std::collections::HashMap<String, (Millis, bool, TraitView)> = std::collections::HashMap::new();
    let mut lineage = Vec::new();
    for (view, is_root) in rows {
        lineage.push(view.clone());
        match latest.get(&view.key) {
            Some((t, root_row, _)) if (*t, *root_row) >= (view.timestamp, is_root) => {}
            _ => {
                latest.insert(view.key.clone(), (view.timestamp, is_root, view));
            }
        }
    }
    let mut traits: Vec<TraitView> = latest.into_values().map(|(_, _, v)| v).collect();
    traits.sort_by(|a, b| a.key.cmp(&b.key));
    (traits, lineage)
}

/// A live profile: the root of its tree, with everything of the profiles merged into it.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileView {
    pub id: ProfileId,
    pub created_at: Millis,
    /// Every profile of the tree, the root first.
    pub members: Vec<ProfileId>,
    pub identities: Vec<IdentityView>,
    /// The golden record: one value per key (the most recent; the service applies the
    /// configured survivorship rules to `trait_values`).
    pub traits: Vec<TraitView>,
    /// Lineage: every source's latest value of every key, across the tree.
    pub trait_values: Vec<TraitView>,
    pub event_count: i64,
    pub first_seen: Option<Millis>,
    pub last_seen: Option<Millis>,
}

/// A stored message and where it sits in the timeline.
#[derive(Debug)]
pub struct EventView {
    pub seq: i64,
    pub timestamp: Millis,
    /// The stored JSON, passed through without re-parsing.
    pub body: Box<RawValue>,
}

/// A position in a profile's timeline (newest first): events strictly older than this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventCursor {
    pub timestamp: Millis,
    pub seq: i64,
}

#[derive(Debug)]
pub struct EventPage {
    pub events: Vec<EventView>,
    pub next: Option<EventCursor>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MergeView {
    pub id: i64,
    pub at: Millis,
    pub into: ProfileId,
    pub from: ProfileId,
    pub rule: String,
    pub evidence: serde_json::Value,
    pub source: Option<String>,
    pub message_id: Option<String>,
    pub undone_at: Option<Millis>,
    pub undone_by: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ConflictView {
    pub at: Millis,
    pub profile: ProfileId,
    pub other: Option<ProfileId>,
    pub kind: IdKind,
    pub reason: String,
    pub message_id: String,
}

/// Totals for the health page and the demo.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub events: i64,
    pub profiles: i64,
    pub merges: i64,
    pub conflicts: i64,
}

/// The storage interface.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
}

/// Calls the same operation on whichever backend holds the data (the shared code's provided
/// methods, or a backend's own where it has one).
macro_rules! dispatch {
    ($self:ident, $name:ident($($arg:expr),*)) => {
        match &$self.backend {
            Backend::Sqlite(b) => b.$name($($arg),*).await,
            Backend::Postgres(b) => b.$name($($arg),*).await,
        }
    };
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and migrates it.
    pub fn open_sqlite(path: &Path, options: SqliteOptions) -> Result<Store> {
        Ok(Store { backend: Backend::Sqlite(sqlite::Sqlite::open(path, options)?) })
    }

    /// Connects to PostgreSQL (retrying while it is unreachable) and migrates it.
    pub async fn open_postgres(options: postgres::PostgresOptions) -> Result<Store> {
        Ok(Store { backend: Backend::Postgres(postgres::Postgres::open(&options).await?) })
    }

    /// Whether this node may run background job `job` now, for `for_ms`: always on SQLite (one
    /// node); on PostgreSQL, when this node holds (or just took) the job's lease, so that a job
    /// runs on one node at a time however many share the database.
    pub async fn lease(&self, job: &str, for_ms: i64) -> Result<bool> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(true),
            Backend::Postgres(p) => p.take_lease(job, &p.node_id(), shared::now_millis(), for_ms).await,
        }
    }

    /// PostgreSQL: drops the month partitions of events that end at or before `cutoff` (ms),
    /// with their deduplication keys. Nothing on SQLite (events go row by row there).
    pub async fn drop_event_months_before(&self, cutoff: Millis) -> Result<Vec<String>> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(Vec::new()),
            Backend::Postgres(p) => p.drop_partitions_before(cutoff).await,
        }
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// The PostgreSQL backend, for what only it has (partitions, job leases).
    pub fn postgres(&self) -> Option<&postgres::Postgres> {
        match &self.backend {
            Backend::Postgres(p) => Some(p),
            Backend::Sqlite(_) => None,
        }
    }

    /// Registers sources by name; returns their ids in the same order.
    pub async fn ensure_sources(&self, names: Vec<String>) -> Result<Vec<i64>> {
        match &self.backend {
            Backend::Sqlite(b) => b.ensure_sources(names).await,
            Backend::Postgres(b) => b.ensure_sources(&names, shared::now_millis()).await,
        }
    }

    /// Stores a batch durably: it returns once the transaction holding it is committed.
    pub async fn ingest(&self, batch: IngestBatch) -> Result<IngestReport> {
        self.ingest_holding(batch, None).await
    }

    /// Stores a batch durably; returns once it is acknowledged. On SQLite that is once the
    /// intake journal holds it (the writer applies it next, and every read waits for that);
    /// on PostgreSQL, once it is applied. `hold` is dropped once the batch is applied: the
    /// caller's share of a bounded queue.
    pub async fn ingest_holding(&self, batch: IngestBatch, hold: Option<Hold>) -> Result<IngestReport> {
        match &self.backend {
            Backend::Sqlite(b) => b.ingest(batch, hold).await,
            Backend::Postgres(b) => b.ingest(&batch, b.rules_ref(), shared::now_millis()).await,
        }
    }

    /// Waits until every batch acknowledged so far is applied (reads do this themselves).
    pub async fn settled(&self) {
        if let Backend::Sqlite(b) = &self.backend {
            b.settled().await
        }
    }

    /// Acknowledged batches that could not be applied since start (each logged as an error).
    pub fn apply_failures(&self) -> u64 {
        match &self.backend {
            Backend::Sqlite(b) => b.apply_failures(),
            Backend::Postgres(_) => 0,
        }
    }

    /// Live profiles holding the identifier (at most one, unless merge protection kept two
    /// apart that share a lower-priority identifier).
    pub async fn find_profiles(&self, kind: IdKind, value: String) -> Result<Vec<ProfileView>> {
        dispatch!(self, find_profiles(kind, value))
    }

    /// A profile by id. The id of a profile merged into another leads to the live profile.
    pub async fn profile(&self, id: ProfileId) -> Result<Option<ProfileView>> {
        dispatch!(self, profile(id))
    }

    pub async fn profile_events(&self, id: ProfileId, limit: usize, cursor: Option<EventCursor>) -> Result<EventPage> {
        dispatch!(self, profile_events(id, limit, cursor))
    }

    /// Merges into or out of any profile of the tree, newest first.
    pub async fn merges(&self, id: ProfileId) -> Result<Vec<MergeView>> {
        dispatch!(self, merges(id))
    }

    pub async fn conflicts(&self, id: ProfileId) -> Result<Vec<ConflictView>> {
        dispatch!(self, conflicts(id))
    }

    /// Undoes one merge into the tree of `id` (the newest active one when `merge_id` is
    /// `None`), restoring both sides exactly, and keeps them from being merged again
    /// automatically. Returns the undone merge.
    pub async fn unmerge(&self, id: ProfileId, merge_id: Option<i64>, actor: String) -> Result<MergeView> {
        dispatch!(self, unmerge(id, merge_id, actor))
    }

    /// A cheap read, to tell that the database answers; fails once an fsync has failed.
    pub async fn ping(&self) -> Result<()> {
        dispatch!(self, ping())
    }

    pub async fn totals(&self) -> Result<Totals> {
        dispatch!(self, totals())
    }

    /// Blocks the writer until the returned guard is dropped. For tests that need a full
    /// queue; never used by the product.
    #[doc(hidden)]
    pub async fn hold_writer(&self) -> WriterHold {
        match &self.backend {
            Backend::Sqlite(b) => WriterHold::Sqlite(b.hold_writer()),
            Backend::Postgres(b) => WriterHold::Postgres(b.hold_writes().await),
        }
    }

    /// Makes the next fsync report an error, to test how failure is handled. Never used by
    /// the product.
    #[doc(hidden)]
    pub fn fail_next_sync(&self) {
        if let Backend::Sqlite(b) = &self.backend {
            b.fail_next_sync()
        }
    }

    /// Stops the writer after it has committed everything queued, and checkpoints the WAL.
    pub async fn close(&self) -> Result<()> {
        dispatch!(self, close())
    }

    // ------------------------------------------------------------------ activation
    pub async fn campaign_get(&self, name: String) -> Result<Option<activation::CampaignView>> {
        dispatch!(self, campaign_get(name))
    }
    pub async fn campaign_list(&self) -> Result<Vec<activation::CampaignView>> {
        dispatch!(self, campaign_list())
    }
    /// Creates a campaign; `Conflict` when the name is taken. A trigger starts after the last
    /// event stored.
    pub async fn campaign_create(&self, def: activation::CampaignDef, actor: String) -> Result<activation::CampaignView> {
        dispatch!(self, campaign_create(def, actor))
    }
    pub async fn campaign_status(&self, id: i64, status: &'static str) -> Result<()> {
        dispatch!(self, campaign_status(id, status))
    }
    pub async fn campaign_cursor(&self, id: i64, cursor: i64) -> Result<()> {
        dispatch!(self, campaign_cursor(id, cursor))
    }
    pub async fn campaign_delete(&self, name: String) -> Result<()> {
        dispatch!(self, campaign_delete(name))
    }
    /// (profile, occurrence) → status of the campaign's deliveries to these subjects.
    pub async fn delivery_states(&self, campaign: i64, profiles: Vec<ProfileId>) -> Result<std::collections::HashMap<(i64, String), String>> {
        dispatch!(self, delivery_states(campaign, profiles))
    }
    /// Durably claims deliveries before they are attempted; those already sent are left out.
    pub async fn deliveries_claim(&self, campaign: i64, wanted: Vec<(ProfileId, String, Vec<u8>)>) -> Result<Vec<activation::DeliveryClaim>> {
        dispatch!(self, deliveries_claim(campaign, wanted))
    }
    pub async fn deliveries_suppress(&self, campaign: i64, rows: Vec<(ProfileId, String, String)>) -> Result<u64> {
        dispatch!(self, deliveries_suppress(campaign, rows))
    }
    /// Stores a privacy-centre code unless `max_recent` were issued for the subject since
    /// `since`; true when stored.
    pub async fn portal_code_issue(&self, code: portal::NewCode, max_recent: u32, since: Millis) -> Result<bool> {
        dispatch!(self, portal_code_issue(code, max_recent, since))
    }
    /// Redeems a code (checked by `matches` against its stored hash) and opens the session, at
    /// most once, in one transaction.
    pub async fn portal_code_redeem(
        &self,
        id: Vec<u8>,
        matches: Box<dyn Fn(&[u8]) -> bool + Send>,
        session: portal::NewSession,
        max_attempts: u32,
    ) -> Result<portal::Redeemed> {
        dispatch!(self, portal_code_redeem(id, matches, session, max_attempts))
    }
    /// A live (unexpired) session by the hash of its cookie.
    pub async fn portal_session(&self, token_hash: Vec<u8>) -> Result<Option<portal::SessionView>> {
        dispatch!(self, portal_session(token_hash))
    }
    pub async fn portal_session_end(&self, token_hash: Vec<u8>) -> Result<()> {
        dispatch!(self, portal_session_end(token_hash))
    }
    /// Creates a console account (`Conflict` when the email has one).
    pub async fn console_user_create(&self, email: String, name: String, role: String, password_hash: String, by: String) -> Result<portal::ConsoleUser> {
        dispatch!(self, console_user_create(email, name, role, password_hash, by))
    }
    pub async fn console_user_by_email(&self, email: String) -> Result<Option<portal::ConsoleUser>> {
        dispatch!(self, console_user_by_email(email))
    }
    pub async fn console_users(&self) -> Result<Vec<portal::ConsoleUser>> {
        dispatch!(self, console_users())
    }
    /// Records a sign-in: with a session, a success (failures reset, session opened); without,
    /// a failure (the account locks until `lock_until` at `max_failures`).
    pub async fn console_login(&self, id: i64, session: Option<portal::NewSession>, max_failures: i64, lock_until: Millis) -> Result<()> {
        dispatch!(self, console_login(id, session, max_failures, lock_until))
    }
    pub async fn console_session(&self, token_hash: Vec<u8>) -> Result<Option<portal::ConsoleSessionView>> {
        dispatch!(self, console_session(token_hash))
    }
    /// Disables a console account and ends its sessions.
    pub async fn console_user_disable(&self, id: i64) -> Result<()> {
        dispatch!(self, console_user_disable(id))
    }
    pub async fn console_session_end(&self, token_hash: Vec<u8>) -> Result<()> {
        dispatch!(self, console_session_end(token_hash))
    }
    /// Events stored per UTC day (days since the epoch) since `since`, for the dashboard.
    pub async fn events_per_day(&self, since: Millis) -> Result<Vec<(i64, u64)>> {
        dispatch!(self, events_per_day(since))
    }
    /// Per purpose: subjects whose latest decision grants it, and refuses it.
    pub async fn consent_rates(&self) -> Result<Vec<(String, u64, u64)>> {
        dispatch!(self, consent_rates())
    }
    pub async fn deliveries_finish(&self, outcomes: Vec<(i64, &'static str, Option<String>)>) -> Result<()> {
        dispatch!(self, deliveries_finish(outcomes))
    }
    /// Marketing messages sent to each subject since a time (for frequency caps).
    pub async fn sent_since(&self, profiles: Vec<ProfileId>, since: Millis) -> Result<std::collections::HashMap<ProfileId, u32>> {
        dispatch!(self, sent_since(profiles, since))
    }
    pub async fn deliveries(&self, campaign: i64, status: Option<String>, after: i64, limit: usize) -> Result<Vec<activation::DeliveryView>> {
        dispatch!(self, deliveries(campaign, status, after, limit))
    }
    pub async fn delivery_counts(&self, campaign: i64) -> Result<Vec<(String, Option<String>, i64)>> {
        dispatch!(self, delivery_counts(campaign))
    }
    pub async fn token_target(&self, token: Vec<u8>) -> Result<Option<activation::TokenTarget>> {
        dispatch!(self, token_target(token))
    }
    /// Marks an unsubscribe link used; false when it was used before.
    pub async fn token_used(&self, delivery: i64) -> Result<bool> {
        dispatch!(self, token_used(delivery))
    }
    /// A trigger's due occurrences after `cursor`, and the cursor to keep.
    pub async fn trigger_due(&self, event: String, unless: String, within: i64, cursor: i64, due: Millis, limit: usize) -> Result<(Vec<activation::TriggerOccurrence>, i64)> {
        dispatch!(self, trigger_due(event, unless, within, cursor, due, limit))
    }
    pub async fn destination_get(&self, name: String) -> Result<Option<activation::DestinationView>> {
        dispatch!(self, destination_get(name))
    }
    pub async fn destination_list(&self) -> Result<Vec<activation::DestinationView>> {
        dispatch!(self, destination_list())
    }
    pub async fn destination_create(&self, def: activation::DestinationDef, actor: String) -> Result<activation::DestinationView> {
        dispatch!(self, destination_create(def, actor))
    }
    pub async fn destination_enable(&self, name: String, enabled: bool) -> Result<activation::DestinationView> {
        dispatch!(self, destination_enable(name, enabled))
    }
    /// Deletes a destination; refused while rights requests to it are undelivered.
    pub async fn destination_delete(&self, name: String) -> Result<()> {
        dispatch!(self, destination_delete(name))
    }
    /// Stored events after a sequence number, with their live profile, bodies decrypted.
    pub async fn events_after(&self, after: i64, limit: usize) -> Result<Vec<activation::ForwardEvent>> {
        dispatch!(self, events_after(after, limit))
    }
    /// The last event and audience-history sequence numbers.
    pub async fn max_seqs(&self) -> Result<(i64, i64)> {
        dispatch!(self, max_seqs())
    }
    pub async fn audience_changes_after(&self, after: i64, limit: usize) -> Result<Vec<activation::AudienceChange>> {
        dispatch!(self, audience_changes_after(after, limit))
    }
    /// Moves a destination's cursors and records the subjects it received data about.
    pub async fn destination_advance(&self, id: i64, events: Option<i64>, audiences: Option<i64>, subjects: Vec<ProfileId>) -> Result<()> {
        dispatch!(self, destination_advance(id, events, audiences, subjects))
    }
    pub async fn dead_add(&self, destination: i64, rows: Vec<activation::DeadLetter>) -> Result<()> {
        dispatch!(self, dead_add(destination, rows))
    }
    pub async fn dead_list(&self, destination: i64, limit: usize) -> Result<Vec<activation::DeadLetter>> {
        dispatch!(self, dead_list(destination, limit))
    }
    pub async fn dead_delete(&self, ids: Vec<i64>) -> Result<u64> {
        dispatch!(self, dead_delete(ids))
    }
    /// Queues a rights request to every destination that received the subject's data.
    pub async fn rights_enqueue(&self, r: activation::RightsToForward) -> Result<u64> {
        dispatch!(self, rights_enqueue(r))
    }
    pub async fn rights_due(&self, now: Millis, limit: usize) -> Result<Vec<activation::RightsForward>> {
        dispatch!(self, rights_due(now, limit))
    }
    pub async fn rights_list(&self, dsr: Option<i64>, destination: Option<String>, limit: usize) -> Result<Vec<activation::RightsForward>> {
        dispatch!(self, rights_list(dsr, destination, limit))
    }
    /// Records an attempt to forward: "delivered", "retry" (at `next_at`) or "dead".
    pub async fn rights_attempt(&self, id: i64, outcome: &'static str, response: Option<i64>, error: Option<String>, next_at: Millis) -> Result<()> {
        dispatch!(self, rights_attempt(id, outcome, response, error, next_at))
    }
    pub async fn rights_replay(&self, destination: i64) -> Result<u64> {
        dispatch!(self, rights_replay(destination))
    }
}

/// Holds ingestion back while alive (tests only): SQLite's writer waits, PostgreSQL's
/// batches wait for the write lock.
pub enum WriterHold {
    Sqlite(sqlite::WriterHold),
    Postgres(tokio::sync::oneshot::Sender<()>),
}

use privacy::*;

/// The privacy side of the interface.
impl Store {
    /// Records consent receipts for the subject the identifiers lead to (created if unknown),
    /// hash-chained in the ledger.
    pub async fn record_consent(&self, w: ConsentWrite) -> Result<ConsentRecorded> {
        dispatch!(self, record_consent(w))
    }
    pub async fn receipts(&self, id: ProfileId) -> Result<Vec<ReceiptView>> {
        dispatch!(self, receipts(id))
    }
    /// The subject's current decisions and restriction.
    pub async fn subject_record(&self, id: ProfileId) -> Result<SubjectRecord> {
        dispatch!(self, subject_record(id))
    }
    /// The records of many subjects in one read, in the same order (`None`: no such profile).
    pub async fn subject_records(&self, ids: Vec<ProfileId>) -> Result<Vec<Option<SubjectRecord>>> {
        dispatch!(self, subject_records(ids))
    }
    pub async fn consent_changes_since(&self, seq: i64) -> Result<Vec<ConsentChange>> {
        dispatch!(self, consent_changes_since(seq))
    }
    /// (last receipt, tombstones): changes when anyone, in any process, records consent or erases.
    pub async fn privacy_version(&self) -> Result<(i64, i64)> {
        dispatch!(self, privacy_version())
    }
    pub async fn verify_receipts(&self) -> Result<ChainReport> {
        dispatch!(self, verify_receipts())
    }
    pub async fn append_audit(&self, entries: Vec<AuditEntry>) -> Result<Vec<i64>> {
        dispatch!(self, append_audit(entries))
    }
    pub async fn audit_list(&self, f: AuditFilter) -> Result<Vec<AuditView>> {
        dispatch!(self, audit_list(f))
    }
    pub async fn verify_audit(&self) -> Result<ChainReport> {
        dispatch!(self, verify_audit())
    }
    pub async fn minimisation(&self) -> Result<Vec<MinimisationRow>> {
        dispatch!(self, minimisation())
    }
    pub async fn dsr_create(&self, d: DsrInput, audit: AuditEntry) -> Result<DsrView> {
        dispatch!(self, dsr_create(d, audit))
    }
    pub async fn dsr_finish(&self, id: i64, status: String, detail: serde_json::Value, audit: AuditEntry) -> Result<DsrView> {
        dispatch!(self, dsr_finish(id, status, detail, audit))
    }
    pub async fn dsr_get(&self, id: i64) -> Result<Option<DsrView>> {
        dispatch!(self, dsr_get(id))
    }
    pub async fn dsr_list(&self, open_only: bool, limit: usize) -> Result<Vec<DsrView>> {
        dispatch!(self, dsr_list(open_only, limit))
    }
    /// Removes the subject from every table and index, leaves tombstones, completes the
    /// request and audits it in one transaction; then empties the WAL.
    pub async fn erase(&self, req: ErasureRequest) -> Result<ErasureReport> {
        dispatch!(self, erase(req))
    }
    pub async fn reapply_tombstones(&self, key: [u8; 32], actor: String) -> Result<u64> {
        dispatch!(self, reapply_tombstones(key, actor))
    }
    pub async fn tombstones(&self, suppress_only: bool) -> Result<Vec<[u8; 32]>> {
        dispatch!(self, tombstones(suppress_only))
    }
    /// Sets or lifts an Art. 18 restriction; `false` when nothing changed.
    pub async fn set_restricted(&self, id: ProfileId, on: bool, audit: AuditEntry) -> Result<bool> {
        dispatch!(self, set_restricted(id, on, audit))
    }
    /// Sets or removes a trait (and corrects the stored messages that carried it); `encrypt`
    /// seals the new value under the subject's key.
    pub async fn rectify(&self, id: ProfileId, key: String, value: Option<serde_json::Value>, encrypt: bool, dsr: i64, audit: AuditEntry) -> Result<()> {
        dispatch!(self, rectify(id, key, value, encrypt, dsr, audit))
    }
    pub async fn export(&self, id: ProfileId) -> Result<SubjectExport> {
        dispatch!(self, export(id))
    }
    pub async fn retention(
        &self,
        rule: std::sync::Arc<dyn Fn(&SubjectRecord) -> RetentionRule + Send + Sync>,
        dry_run: bool,
    ) -> Result<RetentionReport> {
        dispatch!(self, retention(rule, dry_run))
    }
    /// Replaces the quarantined rows of one source's file (a corrected file imported again
    /// clears the rows it fixed). Returns how many rows were there before.
    pub async fn quarantine_replace(&self, source_id: i64, file: String, rows: Vec<QuarantineRow>) -> Result<u64> {
        dispatch!(self, quarantine_replace(source_id, file, rows))
    }
    /// Data quality per source and field: completeness, uniqueness, freshness, duplicates
    /// found (merges), quarantined and rejected counts.
    pub async fn quality(&self) -> Result<Vec<QualitySource>> {
        dispatch!(self, quality())
    }
    /// Every live profile's values of the given keys, for probabilistic matching.
    /// Every `track` event with one of these names, with the root of its subject's tree, in
    /// time order (the analytics job reads orders this way).
    pub async fn events_named(&self, names: Vec<String>) -> Result<Vec<NamedEvent>> {
        dispatch!(self, events_named(names))
    }
    /// Replaces every value of the computed `keys` (a whole analytics run) with `rows`.
    /// Rows of profiles that no longer exist (erased meanwhile) are skipped.
    pub async fn replace_computed(&self, keys: Vec<String>, rows: Vec<(ProfileId, String, serde_json::Value)>) -> Result<u64> {
        dispatch!(self, replace_computed(keys, rows))
    }
    pub async fn computed_traits(&self, id: ProfileId) -> Result<Vec<ComputedTrait>> {
        dispatch!(self, computed_traits(id))
    }
    /// Deletes a subject's computed traits at once (objection to their purpose).
    pub async fn clear_computed(&self, id: ProfileId) -> Result<u64> {
        dispatch!(self, clear_computed(id))
    }
    pub async fn audience_get(&self, name: String) -> Result<Option<audiences::AudienceView>> {
        dispatch!(self, audience_get(name))
    }
    pub async fn audience_list(&self) -> Result<Vec<audiences::AudienceView>> {
        dispatch!(self, audience_list())
    }
    /// Creates an audience (no members yet); `Conflict` when the name is taken.
    pub async fn audience_create(&self, def: audiences::AudienceDef, actor: String) -> Result<audiences::AudienceView> {
        dispatch!(self, audience_create(def, actor))
    }
    pub async fn audience_update(&self, name: String, def: audiences::AudienceDef) -> Result<audiences::AudienceView> {
        dispatch!(self, audience_update(name, def))
    }
    /// Deletes an audience with its members and history.
    pub async fn audience_delete(&self, name: String) -> Result<()> {
        dispatch!(self, audience_delete(name))
    }
    /// The facts audience rules read, per live profile.
    pub async fn audience_facts(&self, q: audiences::FactsQuery) -> Result<Vec<audiences::SubjectFacts>> {
        dispatch!(self, audience_facts(q))
    }
    /// The live subjects with events or consent receipts after the watermark, and the new one.
    pub async fn touched_since(&self, w: audiences::Watermark) -> Result<(Vec<ProfileId>, audiences::Watermark)> {
        dispatch!(self, touched_since(w))
    }
    /// Makes `members` the audience's members among `scope` (all when `None`), recording
    /// each join and leave with `reason`.
    pub async fn audience_apply(&self, name: String, scope: Option<Vec<ProfileId>>, members: Vec<ProfileId>, reason: &'static str) -> Result<audiences::Applied> {
        dispatch!(self, audience_apply(name, scope, members, reason))
    }
    pub async fn audience_members(&self, name: String, after: Option<i64>, limit: usize) -> Result<Vec<audiences::MemberView>> {
        dispatch!(self, audience_members(name, after, limit))
    }
    pub async fn audience_history(&self, name: String, before: Option<i64>, limit: usize) -> Result<Vec<audiences::HistoryView>> {
        dispatch!(self, audience_history(name, before, limit))
    }
    /// The audiences a subject belongs to: (name, purpose, since).
    pub async fn audiences_of(&self, id: ProfileId) -> Result<Vec<(String, String, Millis)>> {
        dispatch!(self, audiences_of(id))
    }
    /// Records stock readings (product, quantity, time); a reading at the same time replaces.
    pub async fn stock_put(&self, levels: Vec<(String, f64, Millis)>, source: String) -> Result<u64> {
        dispatch!(self, stock_put(levels, source))
    }
    /// The latest reading of every product: (product, quantity, time).
    pub async fn stock_current(&self) -> Result<Vec<(String, f64, Millis)>> {
        dispatch!(self, stock_current())
    }
    pub async fn match_candidates(&self, keys: Vec<String>) -> Result<Vec<MatchCandidate>> {
        dispatch!(self, match_candidates(keys))
    }
    /// Merges two profiles judged the same person (`upper`: above the merge threshold), or
    /// queues them for review; merge protection holds.
    pub async fn merge_probable(&self, a: ProfileId, b: ProfileId, probability: f64, evidence: serde_json::Value, upper: bool, actor: String) -> Result<MatchDecision> {
        dispatch!(self, merge_probable(a, b, probability, evidence, upper, actor))
    }
    pub async fn reviews(&self, status: Option<String>) -> Result<Vec<ReviewView>> {
        dispatch!(self, reviews(status))
    }
    pub async fn decide_review(&self, id: i64, merge: bool, actor: String) -> Result<ReviewView> {
        dispatch!(self, decide_review(id, merge, actor))
    }
    pub async fn quarantine_list(&self, source: Option<String>) -> Result<Vec<QuarantineView>> {
        dispatch!(self, quarantine_list(source))
    }
    pub async fn register_counts(&self, trait_categories: std::collections::BTreeMap<String, String>) -> Result<RegisterCounts> {
        dispatch!(self, register_counts(trait_categories))
    }
}
