//! The SQLite backend: one writer thread (group commit), a pool of read connections.

mod activation;
mod audiences;
mod crypt;
mod portal;
mod privacy;
mod read;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use confidant_core::identity::IdentityRules;
use confidant_core::ids::{IdKind, ProfileId};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use tokio::sync::oneshot;

use crate::privacy::*;
use crate::{
    ConflictView, EventCursor, EventPage, IngestBatch, IngestReport, MergeView, ProfileView, Result, SqliteOptions, StoreError,
    Totals,
};

/// Migrations, applied in order; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_foundation.sql"),
    include_str!("../../migrations/sqlite/0002_privacy.sql"),
    include_str!("../../migrations/sqlite/0003_import.sql"),
    include_str!("../../migrations/sqlite/0004_traits_by_source.sql"),
    include_str!("../../migrations/sqlite/0005_match_reviews.sql"),
    include_str!("../../migrations/sqlite/0006_computed_traits.sql"),
    include_str!("../../migrations/sqlite/0007_audiences.sql"),
    include_str!("../../migrations/sqlite/0008_stock.sql"),
    include_str!("../../migrations/sqlite/0009_activation.sql"),
    include_str!("../../migrations/sqlite/0010_portal.sql"),
    include_str!("../../migrations/sqlite/0011_console.sql"),
];

/// The members of the tree rooted at `?1`: the root and every profile merged into it,
/// directly or not. Prefix of every query that reads a whole profile.
pub(crate) const MEMBERS: &str =
    "WITH RECURSIVE m(id) AS (SELECT ?1 UNION ALL SELECT p.id FROM profiles p JOIN m ON p.merged_into = m.id) ";

pub(crate) fn kind_code(k: IdKind) -> i64 {
    match k {
        IdKind::UserId => 0,
        IdKind::Email => 1,
        IdKind::Phone => 2,
        IdKind::AnonymousId => 3,
    }
}

pub(crate) fn kind_of(code: i64) -> IdKind {
    match code {
        0 => IdKind::UserId,
        1 => IdKind::Email,
        2 => IdKind::Phone,
        _ => IdKind::AnonymousId,
    }
}

pub(crate) fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The live profile a profile belongs to: follows `merged_into` to the root.
pub(crate) fn root_of(conn: &Connection, id: i64) -> Result<Option<i64>> {
    let mut stmt = conn.prepare_cached("SELECT merged_into FROM profiles WHERE id = ?1")?;
    let mut current = id;
    // Trees are shallow; the bound only guards against a corrupted cycle.
    for _ in 0..100_000 {
        match stmt.query_row([current], |r| r.get::<_, Option<i64>>(0)).optional()? {
            None => return Ok(None),
            Some(None) => return Ok(Some(current)),
            Some(Some(parent)) => current = parent,
        }
    }
    Err(StoreError::Conflict(format!("profile {} has a merge cycle", ProfileId(id))))
}

pub(crate) fn members(conn: &Connection, root: i64) -> Result<Vec<i64>> {
    let mut stmt = conn.prepare_cached(&format!("{MEMBERS} SELECT id FROM m"))?;
    let rows = stmt.query_map([root], |r| r.get(0))?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

fn configure(conn: &Connection, writer: bool) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // secure_delete overwrites deleted content with zeros, so erased data does not linger
    // in free pages; temp_store keeps sorts and temporary tables out of files.
    conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON; PRAGMA temp_store = MEMORY;")?;
    if writer {
        // For a new database only. Measured: 1 KiB and 2 KiB pages ingest slower (BENCHMARKS.md).
        conn.execute_batch("PRAGMA page_size = 4096;")?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Open(format!("could not switch to WAL (journal mode is {mode})")));
        }
        // NORMAL: a commit writes its WAL frames without fsync; the syncer thread fsyncs the
        // WAL before any commit is acknowledged (see `writer::spawn_syncer`). Checkpoints are
        // left to the checkpointer thread, so the writer never stalls copying the WAL back.
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA cache_size = -65536; PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 268435456;")?;
    } else {
        conn.execute_batch("PRAGMA query_only = ON; PRAGMA cache_size = -16384;")?;
    }
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let supported = MIGRATIONS.len() as i64;
    if version > supported {
        return Err(StoreError::SchemaTooNew { found: version, supported });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied migration");
    }
    Ok(())
}

/// Copies committed WAL frames back into the database every 100 ms on its own connection, so
/// that most checkpoint I/O overlaps with the writer's commits instead of stalling them.
/// (A passive checkpoint cannot restart the log while the writer never pauses; the writer
/// does that itself, see `writer::RESTART_EVERY`.)
fn spawn_checkpointer(path: &Path) -> Result<mpsc::Sender<()>> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| StoreError::Open(e.to_string()))?;
    conn.busy_timeout(std::time::Duration::from_millis(100))?;
    // FULL: the WAL is synced before frames are copied back and the database after, so a
    // frame is never lost by the log starting again.
    conn.execute_batch("PRAGMA secure_delete = ON; PRAGMA synchronous = FULL;")?;
    let (stop, stopped) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("confidant-checkpoint".into())
        .spawn(move || {
            lower_priority();
            // Every 100 ms when idle; back to back while there is a backlog to copy.
            let mut pause = std::time::Duration::from_millis(100);
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(pause) {
                match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))) {
                    Ok((log, copied)) if log - copied > 256 => pause = std::time::Duration::from_millis(5),
                    Ok(_) => pause = std::time::Duration::from_millis(100),
                    Err(e) => tracing::debug!(error = %e, "checkpoint skipped"),
                }
            }
        })
        .map_err(|e| StoreError::Open(e.to_string()))?;
    Ok(stop)
}

/// Lowers the calling thread's CPU priority (nice 10), so that background copying yields to
/// the writer, whose commits clients are waiting for. Raising one's own nice value needs no
/// privilege; where it fails, nothing changes.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid has no preconditions; setpriority on our own thread id only changes
    // this thread's scheduling priority.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

/// A profile with its sealed trait values opened.
fn open_profile(c: &Connection, master: &[u8; 32], mut p: ProfileView) -> Result<ProfileView> {
    let mut keys = std::collections::HashMap::new();
    for t in p.traits.iter_mut().chain(p.trait_values.iter_mut()) {
        crypt::open_value(c, master, &mut t.value, &mut keys)?;
    }
    Ok(p)
}

fn open_events(c: &Connection, master: &[u8; 32], events: &mut [crate::EventView]) -> Result<()> {
    let mut keys = std::collections::HashMap::new();
    for e in events {
        if e.body.get().contains("\"$enc\"") {
            let text = crypt::open_text(c, master, e.body.get().to_owned(), &mut keys)?;
            e.body = crate::RawValue::from_string(text).map_err(|err| StoreError::Conflict(format!("stored event is not JSON: {err}")))?;
        }
    }
    Ok(())
}

/// Shared with the syncer.
#[derive(Default)]
pub(crate) struct SyncState {
    /// Set when an fsync failed: writes are refused from then on.
    pub(crate) failed: std::sync::atomic::AtomicBool,
    /// Tests only: the next fsync reports an error.
    pub(crate) inject_failure: std::sync::atomic::AtomicBool,
}

/// Holds the writer while alive (tests only).
pub struct WriterHold {
    gate: Arc<(Mutex<bool>, Condvar)>,
}

impl Drop for WriterHold {
    fn drop(&mut self) {
        let (lock, cv) = &*self.gate;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = false;
        cv.notify_all();
    }
}

/// Sends a job's result to its caller, or the error that overrides it (a failed commit or fsync).
pub(crate) type Answer = Box<dyn FnOnce(Option<StoreError>) + Send>;

/// A job run by the writer inside its own savepoint: given the connection (or `None` when
/// the job is refused unrun), it returns whether it succeeded and how to answer.
pub(crate) type Run = Box<dyn FnOnce(Option<(&Connection, &mut writer::IdentityCache)>) -> (bool, Answer) + Send>;

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ExecFlags {
    /// The job may change the identity graph other than through `resolve_target`: the
    /// writer's cache is cleared.
    pub(crate) changes_identities: bool,
    /// After the commit, checkpoint and truncate the WAL before answering (erasure).
    pub(crate) truncate_wal: bool,
}

pub(crate) enum Job {
    Exec { run: Run, flags: ExecFlags },
    Ingest(IngestBatch, oneshot::Sender<Result<IngestReport>>),
    EnsureSources(Vec<String>, oneshot::Sender<Result<Vec<i64>>>),
    Unmerge { id: ProfileId, merge_id: Option<i64>, actor: String, reply: oneshot::Sender<Result<MergeView>> },
    Close(oneshot::Sender<()>),
}

struct Inner {
    path: PathBuf,
    /// Dropping it stops the checkpointer.
    checkpointer: Mutex<Option<mpsc::Sender<()>>>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    idle_readers: Mutex<Vec<Connection>>,
    gate: Arc<(Mutex<bool>, Condvar)>,
    sync_failed: Arc<SyncState>,
    rules: IdentityRules,
    master_key: [u8; 32],
}

#[derive(Clone)]
pub(crate) struct Sqlite {
    inner: Arc<Inner>,
}

impl Sqlite {
    pub(crate) fn open(path: &Path, options: SqliteOptions) -> Result<Sqlite> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags).map_err(|e| StoreError::Open(e.to_string()))?;
        configure(&conn, true)?;
        migrate(&mut conn)?;
        let (tx, rx) = mpsc::channel();
        let rules = options.rules.clone();
        let master_key = options.master_key;
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let writer_gate = gate.clone();
        let sync_failed = Arc::new(SyncState::default());
        std::thread::Builder::new()
            .name("confidant-writer".into())
            .spawn({
                let (path, sync_failed) = (path.to_owned(), sync_failed.clone());
                move || writer::run(conn, rx, options, writer_gate, path, sync_failed)
            })
            .map_err(|e| StoreError::Open(e.to_string()))?;
        let checkpointer = spawn_checkpointer(path)?;
        Ok(Sqlite {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                checkpointer: Mutex::new(Some(checkpointer)),
                jobs: Mutex::new(Some(tx)),
                idle_readers: Mutex::new(Vec::new()),
                gate,
                sync_failed,
                rules,
                master_key,
            }),
        })
    }

    /// Runs `f` on the writer, inside the next group commit; returns once it is durable.
    pub(crate) async fn exec<T: Send + 'static>(
        &self,
        flags: ExecFlags,
        f: impl FnOnce(&Connection, &mut writer::IdentityCache) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.submit(move |tx: oneshot::Sender<Result<T>>| {
            let run: Run = Box::new(move |conn| {
                let result = match conn {
                    Some((c, cache)) => f(c, cache),
                    None => Err(StoreError::ShuttingDown),
                };
                let ok = result.is_ok();
                let answer: Answer = Box::new(move |err| {
                    let _ = tx.send(match err {
                        Some(e) => Err(e),
                        None => result,
                    });
                });
                (ok, answer)
            });
            Job::Exec { run, flags }
        })
        .await
    }

    async fn submit<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Job) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        {
            let jobs = self.inner.jobs.lock().unwrap_or_else(|e| e.into_inner());
            let sender = jobs.as_ref().ok_or(StoreError::ShuttingDown)?;
            sender.send(make(tx)).map_err(|_| StoreError::ShuttingDown)?;
        }
        rx.await.map_err(|_| StoreError::ShuttingDown)?
    }

    /// Runs `f` on a read connection, off the async runtime.
    async fn read<T: Send + 'static>(&self, f: impl FnOnce(&Connection) -> Result<T> + Send + 'static) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = match inner.idle_readers.lock().unwrap_or_else(|e| e.into_inner()).pop() {
                Some(c) => c,
                None => {
                    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                    let c = Connection::open_with_flags(&inner.path, flags).map_err(|e| StoreError::Open(e.to_string()))?;
                    configure(&c, false)?;
                    c
                }
            };
            let out = f(&conn);
            let mut idle = inner.idle_readers.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < 8 {
                idle.push(conn);
            }
            out
        })
        .await
        .map_err(|_| StoreError::ShuttingDown)?
    }

    pub(crate) async fn ensure_sources(&self, names: Vec<String>) -> Result<Vec<i64>> {
        self.submit(|reply| Job::EnsureSources(names, reply)).await
    }

    pub(crate) async fn ingest(&self, batch: IngestBatch) -> Result<IngestReport> {
        self.submit(|reply| Job::Ingest(batch, reply)).await
    }

    pub(crate) async fn unmerge(&self, id: ProfileId, merge_id: Option<i64>, actor: String) -> Result<MergeView> {
        self.submit(|reply| Job::Unmerge { id, merge_id, actor, reply }).await
    }

    fn rules(&self) -> IdentityRules {
        self.inner.rules.clone()
    }

    // ---------------------------------------------------------------- privacy

    pub(crate) async fn record_consent(&self, w: ConsentWrite) -> Result<ConsentRecorded> {
        let rules = self.rules();
        self.exec(ExecFlags::default(), move |c, cache| privacy::record_consent(c, cache, &rules, w, now_millis())).await
    }

    pub(crate) async fn append_audit(&self, entries: Vec<AuditEntry>) -> Result<Vec<i64>> {
        self.exec(ExecFlags::default(), move |c, _| privacy::append_audit(c, &entries, now_millis())).await
    }

    pub(crate) async fn dsr_create(&self, d: DsrInput, audit: AuditEntry) -> Result<DsrView> {
        self.exec(ExecFlags::default(), move |c, _| {
            let v = privacy::dsr_create(c, &d)?;
            let mut a = audit;
            if let serde_json::Value::Object(m) = &mut a.detail {
                m.insert("request".into(), v.receipt_id.clone().into());
            }
            privacy::append_audit(c, &[a], now_millis())?;
            Ok(v)
        })
        .await
    }

    pub(crate) async fn dsr_finish(&self, id: i64, status: String, detail: serde_json::Value, audit: AuditEntry) -> Result<DsrView> {
        self.exec(ExecFlags::default(), move |c, _| {
            let now = now_millis();
            let v = privacy::dsr_finish(c, id, &status, &detail, now)?;
            privacy::append_audit(c, &[audit], now)?;
            Ok(v)
        })
        .await
    }

    pub(crate) async fn erase(&self, req: ErasureRequest) -> Result<ErasureReport> {
        self.exec(ExecFlags { changes_identities: true, truncate_wal: true }, move |c, _| privacy::erase(c, &req, now_millis())).await
    }

    pub(crate) async fn reapply_tombstones(&self, key: [u8; 32], actor: String) -> Result<u64> {
        self.exec(ExecFlags { changes_identities: true, truncate_wal: true }, move |c, _| privacy::reapply_tombstones(c, &key, &actor, now_millis()))
            .await
    }

    pub(crate) async fn set_restricted(&self, id: ProfileId, on: bool, audit: AuditEntry) -> Result<bool> {
        self.exec(ExecFlags::default(), move |c, _| {
            let now = now_millis();
            let changed = privacy::set_restricted(c, id.0, on, &audit.actor, now)?;
            if changed {
                privacy::append_audit(c, &[audit], now)?;
            }
            Ok(changed)
        })
        .await
    }

    pub(crate) async fn rectify(&self, id: ProfileId, key: String, value: Option<serde_json::Value>, encrypt: bool, dsr: i64, audit: AuditEntry) -> Result<()> {
        let master = self.inner.master_key;
        if key.contains('"') || key.contains('\\') {
            return Err(StoreError::Invalid("a trait key cannot hold quotes or backslashes".into()));
        }
        // The old value is gone from the WAL too, as after an erasure.
        self.exec(ExecFlags { changes_identities: false, truncate_wal: true }, move |c, _| {
            let now = now_millis();
            privacy::rectify(c, id.0, &key, value.as_ref(), encrypt.then_some(&master), dsr, now)?;
            privacy::append_audit(c, &[audit], now)?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn retention(
        &self,
        rule: std::sync::Arc<dyn Fn(&SubjectRecord) -> RetentionRule + Send + Sync>,
        dry_run: bool,
    ) -> Result<RetentionReport> {
        let mut report = RetentionReport { dry_run, ..Default::default() };
        let mut after = i64::MIN;
        loop {
            // Decide on a read connection, apply on the writer, a chunk at a time, so that
            // ingestion is never held up for long.
            let batch = self.read(move |c| privacy::retention_batch(c, after, 2_000)).await?;
            let Some(last) = batch.last().map(|b| b.0) else { break };
            after = last;
            let decided: Vec<(i64, i64, RetentionRule)> = batch.into_iter().map(|(root, last, rec)| (root, last, rule(&rec))).collect();
            let mut chunk = RetentionReport::default();
            chunk = self
                .exec(ExecFlags { changes_identities: true, truncate_wal: false }, move |c, _| {
                    let now = now_millis();
                    if dry_run {
                        c.execute_batch("SAVEPOINT dry_run")?;
                    }
                    let r = privacy::apply_retention(c, &decided, now, &mut chunk);
                    if dry_run {
                        c.execute_batch("ROLLBACK TO dry_run; RELEASE dry_run")?;
                    }
                    r.map(|_| chunk)
                })
                .await?;
            report.subjects_examined += chunk.subjects_examined;
            report.subjects_erased += chunk.subjects_erased;
            report.events_deleted += chunk.events_deleted;
            for (k, v) in chunk.events_by_category {
                *report.events_by_category.entry(k).or_default() += v;
            }
        }
        if !dry_run && (report.events_deleted > 0 || report.subjects_erased > 0) {
            self.exec(ExecFlags { changes_identities: false, truncate_wal: true }, |_, _| Ok(())).await?;
        }
        Ok(report)
    }

    pub(crate) async fn quarantine_replace(&self, source_id: i64, file: String, rows: Vec<QuarantineRow>) -> Result<u64> {
        self.exec(ExecFlags::default(), move |c, _| {
            let removed = c.prepare_cached("DELETE FROM quarantine WHERE source_id = ?1 AND file = ?2")?.execute(rusqlite::params![source_id, file])? as u64;
            let mut ins = c.prepare_cached("INSERT INTO quarantine(source_id, file, line, field, reason, raw, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?;
            let now = now_millis();
            for r in &rows {
                ins.execute(rusqlite::params![source_id, file, r.line as i64, r.field, r.reason, r.raw, now])?;
            }
            Ok(removed)
        })
        .await
    }

    pub(crate) async fn quarantine_list(&self, source: Option<String>) -> Result<Vec<QuarantineView>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT s.name, q.file, q.line, q.field, q.reason, q.raw, q.at FROM quarantine q JOIN sources s ON s.id = q.source_id
                 WHERE ?1 IS NULL OR s.name = ?1 ORDER BY s.name, q.file, q.line",
            )?;
            let rows = stmt.query_map([source], |r| {
                Ok(QuarantineView { source: r.get(0)?, file: r.get(1)?, line: r.get::<_, i64>(2)? as u64, field: r.get(3)?, reason: r.get(4)?, raw: r.get(5)?, at: r.get(6)? })
            })?;
            Ok(rows.collect::<std::result::Result<_, _>>()?)
        })
        .await
    }

    pub(crate) async fn events_named(&self, names: Vec<String>) -> Result<Vec<crate::NamedEvent>> {
        self.read(move |c| privacy::events_named(c, &names)).await
    }

    pub(crate) async fn replace_computed(&self, keys: Vec<String>, rows: Vec<(ProfileId, String, serde_json::Value)>) -> Result<u64> {
        self.exec(ExecFlags::default(), move |c, _| privacy::replace_computed(c, &keys, &rows, now_millis())).await
    }

    pub(crate) async fn computed_traits(&self, id: ProfileId) -> Result<Vec<crate::ComputedTrait>> {
        self.read(move |c| privacy::computed_traits(c, id.0)).await
    }

    pub(crate) async fn clear_computed(&self, id: ProfileId) -> Result<u64> {
        self.exec(ExecFlags::default(), move |c, _| privacy::clear_computed(c, id.0)).await
    }

    pub(crate) async fn match_candidates(&self, keys: Vec<String>) -> Result<Vec<MatchCandidate>> {
        let master = self.inner.master_key;
        self.read(move |c| privacy::match_candidates(c, &master, &keys)).await
    }

    pub(crate) async fn merge_probable(&self, a: ProfileId, b: ProfileId, probability: f64, evidence: serde_json::Value, upper: bool, actor: String) -> Result<MatchDecision> {
        self.exec(ExecFlags { changes_identities: true, truncate_wal: false }, move |c, _| privacy::merge_probable(c, a.0, b.0, probability, &evidence, upper, &actor, now_millis())).await
    }

    pub(crate) async fn reviews(&self, status: Option<String>) -> Result<Vec<ReviewView>> {
        self.read(move |c| privacy::reviews(c, status.as_deref())).await
    }

    pub(crate) async fn decide_review(&self, id: i64, merge: bool, actor: String) -> Result<ReviewView> {
        self.exec(ExecFlags { changes_identities: true, truncate_wal: false }, move |c, _| privacy::decide_review(c, id, merge, &actor, now_millis())).await
    }

    pub(crate) async fn quality(&self) -> Result<Vec<QualitySource>> {
        self.read(privacy::quality).await
    }

    pub(crate) async fn subject_record(&self, id: ProfileId) -> Result<SubjectRecord> {
        self.read(move |c| privacy::subject_record(c, id.0)).await
    }

    pub(crate) async fn subject_records(&self, ids: Vec<ProfileId>) -> Result<Vec<Option<SubjectRecord>>> {
        self.read(move |c| {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                match privacy::subject_record(c, id.0) {
                    Ok(r) => out.push(Some(r)),
                    Err(StoreError::NotFound(_)) => out.push(None),
                    Err(e) => return Err(e),
                }
            }
            Ok(out)
        })
        .await
    }

    pub(crate) async fn audience_get(&self, name: String) -> Result<Option<crate::audiences::AudienceView>> {
        self.read(move |c| audiences::get(c, &name)).await
    }

    pub(crate) async fn audience_list(&self) -> Result<Vec<crate::audiences::AudienceView>> {
        self.read(audiences::list).await
    }

    pub(crate) async fn audience_create(&self, def: crate::audiences::AudienceDef, actor: String) -> Result<crate::audiences::AudienceView> {
        self.exec(ExecFlags::default(), move |c, _| audiences::create(c, &def, &actor, now_millis())).await
    }

    pub(crate) async fn audience_update(&self, name: String, def: crate::audiences::AudienceDef) -> Result<crate::audiences::AudienceView> {
        self.exec(ExecFlags::default(), move |c, _| audiences::update(c, &name, &def, now_millis())).await
    }

    pub(crate) async fn audience_delete(&self, name: String) -> Result<()> {
        self.exec(ExecFlags::default(), move |c, _| audiences::delete(c, &name)).await
    }

    pub(crate) async fn audience_facts(&self, q: crate::audiences::FactsQuery) -> Result<Vec<crate::audiences::SubjectFacts>> {
        let master = self.inner.master_key;
        self.read(move |c| audiences::facts(c, &master, &q)).await
    }

    pub(crate) async fn touched_since(&self, w: crate::audiences::Watermark) -> Result<(Vec<ProfileId>, crate::audiences::Watermark)> {
        self.read(move |c| audiences::touched_since(c, w)).await
    }

    pub(crate) async fn audience_apply(&self, name: String, scope: Option<Vec<ProfileId>>, members: Vec<ProfileId>, reason: &'static str) -> Result<crate::audiences::Applied> {
        self.exec(ExecFlags::default(), move |c, _| audiences::apply(c, &name, scope.as_deref(), &members, reason, now_millis())).await
    }

    pub(crate) async fn audience_members(&self, name: String, after: Option<i64>, limit: usize) -> Result<Vec<crate::audiences::MemberView>> {
        self.read(move |c| audiences::members(c, &name, after, limit)).await
    }

    pub(crate) async fn audience_history(&self, name: String, before: Option<i64>, limit: usize) -> Result<Vec<crate::audiences::HistoryView>> {
        self.read(move |c| audiences::history(c, &name, before, limit)).await
    }

    pub(crate) async fn audiences_of(&self, id: ProfileId) -> Result<Vec<(String, String, i64)>> {
        self.read(move |c| audiences::of_subject(c, id.0)).await
    }

    pub(crate) async fn stock_put(&self, levels: Vec<(String, f64, i64)>, source: String) -> Result<u64> {
        self.exec(ExecFlags::default(), move |c, _| {
            let mut stmt = c.prepare_cached("INSERT OR REPLACE INTO stock_levels(product, at, quantity, source) VALUES (?1, ?2, ?3, ?4)")?;
            let mut n = 0;
            for (product, quantity, at) in &levels {
                n += stmt.execute(rusqlite::params![product, at, quantity, source])? as u64;
            }
            Ok(n)
        })
        .await
    }

    pub(crate) async fn stock_current(&self) -> Result<Vec<(String, f64, i64)>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT product, quantity, max(at) FROM stock_levels GROUP BY product ORDER BY product")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<std::result::Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    // ------------------------------------------------------------------ activation
    pub(crate) async fn campaign_get(&self, name: String) -> Result<Option<crate::activation::CampaignView>> {
        self.read(move |c| activation::campaign_get(c, &name)).await
    }
    pub(crate) async fn campaign_list(&self) -> Result<Vec<crate::activation::CampaignView>> {
        self.read(activation::campaign_list).await
    }
    pub(crate) async fn campaign_create(&self, def: crate::activation::CampaignDef, actor: String) -> Result<crate::activation::CampaignView> {
        self.exec(ExecFlags::default(), move |c, _| activation::campaign_create(c, &def, &actor, now_millis())).await
    }
    pub(crate) async fn campaign_status(&self, id: i64, status: &'static str) -> Result<()> {
        self.exec(ExecFlags::default(), move |c, _| activation::campaign_status(c, id, status, now_millis())).await
    }
    pub(crate) async fn campaign_cursor(&self, id: i64, cursor: i64) -> Result<()> {
        self.exec(ExecFlags::default(), move |c, _| activation::campaign_cursor(c, id, cursor)).await
    }
    pub(crate) async fn campaign_delete(&self, name: String) -> Result<()> {
        self.exec(ExecFlags::default(), move |c, _| activation::campaign_delete(c, &name)).await
    }
    pub(crate) async fn delivery_states(&self, campaign: i64, profiles: Vec<ProfileId>) -> Result<std::collections::HashMap<(i64, String), String>> {
        self.read(move |c| activation::delivery_states(c, campaign, &profiles)).await
    }
    pub(crate) async fn deliveries_claim(&self, campaign: i64, wanted: Vec<(ProfileId, String, Vec<u8>)>) -> Result<Vec<crate::activation::DeliveryClaim>> {
        self.exec(ExecFlags::default(), move |c, _| activation::deliveries_claim(c, campaign, &wanted, now_millis())).await
    }
    pub(crate) async fn deliveries_suppress(&self, campaign: i64, rows: Vec<(ProfileId, String, String)>) -> Result<u64> {
        self.exec(ExecFlags::default(), move |c, _| activation::deliveries_suppress(c, campaign, &rows, now_millis())).await
    }
    pub(crate) async fn portal_code_issue(&self, code: crate::portal::NewCode, max_recent: u32, since: i64) -> Result<bool> {
        self.exec(ExecFlags::default(), move |c, _| portal::code_issue(c, &code, max_recent, since, now_millis())).await
    }
    pub(crate) async fn portal_code_redeem(
        &self,
        id: Vec<u8>,
        matches: Box<dyn Fn(&[u8]) -> bool + Send>,
        session: crate::portal::NewSession,
        max_attempts: u32,
    ) -> Result<crate::portal::Redeemed> {
        self.exec(ExecFlags::default(), move |c, _| portal::code_redeem(c, &id, &*matches, &session, max_attempts, now_millis())).await
    }
    pub(crate) async fn portal_session(&self, token_hash: Vec<u8>) -> Result<Option<crate::portal::SessionView>> {
        self.read(move |c| portal::session(c, &token_hash, now_millis())).await
    }
    pub(crate) async fn portal_session_end(&self, token_hash: Vec<u8>) -> Result<()> {
        self.exec(ExecFlags::default(), move |c, _| portal::session_end(c, &token_hash)).await
    }
    pub(crate) async fn console_user_create(&self, email: String, name: String, role: String, password_hash: String, by: String) -> Result<crate::portal::ConsoleUser> {
        self.exec(ExecFlags::default(), move |c, _| portal::user_create(c, &email, &name, &role, &password_hash, &by, now_millis())).await
    }
    pub(crate) async fn console_user_by_email(&self, email: String) -> Result<Option<crate::portal::ConsoleUser>> {
        self.read(move |c| portal::user_by_email(c, &email)).await
    }
    pub(crate) async fn console_users(&self) -> Result<Vec<crate::portal::ConsoleUser>> {
        self.read(portal::users).await
    }
    pub(crate) async fn console_login(&self, id: i64, session: Option<crate::portal::NewSession>, max_failures: i64, lock_until: i64) -> Result<()> {
        self.exec(ExecFlags::default(), move |c, _| portal::user_login(c, id, session.as_ref(), max_failures, lock_until, now_millis())).await
    }
    pub(crate) async fn console_session(&self, token_hash: Vec<u8>) -> Result<Option<crate::portal::ConsoleSessionView>> {
        self.read(move |c| portal::console_session(c, &token_hash, now_millis())).await
    }
    pub(crate) async fn console_user_disable(&self, id: i64) -> Result<()> {
        self.exec(ExecFlags::default(), move |c, _| portal::user_disable(c, id, now_millis())).await
    }
    pub(crate) async fn console_session_end(&self, token_hash: Vec<u8>) -> Result<()> {
        self.exec(ExecFlags::default(), move |c, _| portal::console_session_end(c, &token_hash)).await
    }
    pub(crate) async fn events_per_day(&self, since: i64) -> Result<Vec<(i64, u64)>> {
        self.read(move |c| portal::events_per_day(c, since)).await
    }
    pub(crate) async fn consent_rates(&self) -> Result<Vec<(String, u64, u64)>> {
        self.read(portal::consent_rates).await
    }
    pub(crate) async fn deliveries_finish(&self, outcomes: Vec<(i64, &'static str, Option<String>)>) -> Result<()> {
        self.exec(ExecFlags::default(), move |c, _| activation::deliveries_finish(c, &outcomes, now_millis())).await
    }
    pub(crate) async fn sent_since(&self, profiles: Vec<ProfileId>, since: i64) -> Result<std::collections::HashMap<ProfileId, u32>> {
        self.read(move |c| activation::sent_since(c, &profiles, since)).await
    }
    pub(crate) async fn deliveries(&self, campaign: i64, status: Option<String>, after: i64, limit: usize) -> Result<Vec<crate::activation::DeliveryView>> {
        self.read(move |c| activation::deliveries(c, campaign, status.as_deref(), after, limit)).await
    }
    pub(crate) async fn delivery_counts(&self, campaign: i64) -> Result<Vec<(String, Option<String>, i64)>> {
        self.read(move |c| activation::delivery_counts(c, campaign)).await
    }
    pub(crate) async fn token_target(&self, token: Vec<u8>) -> Result<Option<crate::activation::TokenTarget>> {
        self.read(move |c| activation::token_target(c, &token)).await
    }
    pub(crate) async fn token_used(&self, delivery: i64) -> Result<bool> {
        self.exec(ExecFlags::default(), move |c, _| activation::token_used(c, delivery, now_millis())).await
    }
    pub(crate) async fn trigger_due(&self, event: String, unless: String, within: i64, cursor: i64, due: i64, limit: usize) -> Result<(Vec<crate::activation::TriggerOccurrence>, i64)> {
        self.read(move |c| activation::trigger_due(c, &event, &unless, within, cursor, due, limit)).await
    }
    pub(crate) async fn destination_get(&self, name: String) -> Result<Option<crate::activation::DestinationView>> {
        self.read(move |c| activation::destination_get(c, &name)).await
    }
    pub(crate) async fn destination_list(&self) -> Result<Vec<crate::activation::DestinationView>> {
        self.read(activation::destination_list).await
    }
    pub(crate) async fn destination_create(&self, def: crate::activation::DestinationDef, actor: String) -> Result<crate::activation::DestinationView> {
        self.exec(ExecFlags::default(), move |c, _| activation::destination_create(c, &def, &actor, now_millis())).await
    }
    pub(crate) async fn destination_enable(&self, name: String, enabled: bool) -> Result<crate::activation::DestinationView> {
        self.exec(ExecFlags::default(), move |c, _| activation::destination_enable(c, &name, enabled)).await
    }
    pub(crate) async fn destination_delete(&self, name: String) -> Result<()> {
        self.exec(ExecFlags::default(), move |c, _| activation::destination_delete(c, &name)).await
    }
    pub(crate) async fn events_after(&self, after: i64, limit: usize) -> Result<Vec<crate::activation::ForwardEvent>> {
        let master = self.inner.master_key;
        self.read(move |c| activation::events_after(c, &master, after, limit)).await
    }
    pub(crate) async fn max_seqs(&self) -> Result<(i64, i64)> {
        self.read(|c| Ok((activation::max_event_seq(c)?, activation::max_audience_seq(c)?))).await
    }
    pub(crate) async fn audience_changes_after(&self, after: i64, limit: usize) -> Result<Vec<crate::activation::AudienceChange>> {
        self.read(move |c| activation::audience_changes_after(c, after, limit)).await
    }
    pub(crate) async fn destination_advance(&self, id: i64, events: Option<i64>, audiences: Option<i64>, subjects: Vec<ProfileId>) -> Result<()> {
        self.exec(ExecFlags::default(), move |c, _| activation::destination_advance(c, id, events, audiences, &subjects, now_millis())).await
    }
    pub(crate) async fn dead_add(&self, destination: i64, rows: Vec<crate::activation::DeadLetter>) -> Result<()> {
        self.exec(ExecFlags::default(), move |c, _| activation::dead_add(c, destination, &rows)).await
    }
    pub(crate) async fn dead_list(&self, destination: i64, limit: usize) -> Result<Vec<crate::activation::DeadLetter>> {
        self.read(move |c| activation::dead_list(c, destination, limit)).await
    }
    pub(crate) async fn dead_delete(&self, ids: Vec<i64>) -> Result<u64> {
        self.exec(ExecFlags::default(), move |c, _| activation::dead_delete(c, &ids)).await
    }
    pub(crate) async fn rights_enqueue(&self, r: crate::activation::RightsToForward) -> Result<u64> {
        self.exec(ExecFlags::default(), move |c, _| activation::rights_enqueue(c, &r, now_millis())).await
    }
    pub(crate) async fn rights_due(&self, now: i64, limit: usize) -> Result<Vec<crate::activation::RightsForward>> {
        self.read(move |c| activation::rights_due(c, now, limit)).await
    }
    pub(crate) async fn rights_list(&self, dsr: Option<i64>, destination: Option<String>, limit: usize) -> Result<Vec<crate::activation::RightsForward>> {
        self.read(move |c| activation::rights_list(c, dsr, destination.as_deref(), limit)).await
    }
    pub(crate) async fn rights_attempt(&self, id: i64, outcome: &'static str, response: Option<i64>, error: Option<String>, next_at: i64) -> Result<()> {
        // A delivered request's payload (identifiers of an erased subject) is cleared; the WAL
        // is truncated after the commit so that no older page image keeps it.
        let flags = ExecFlags { truncate_wal: outcome == "delivered", ..ExecFlags::default() };
        self.exec(flags, move |c, _| activation::rights_attempt(c, id, outcome, response, error.as_deref(), next_at, now_millis())).await
    }
    pub(crate) async fn rights_replay(&self, destination: i64) -> Result<u64> {
        self.exec(ExecFlags::default(), move |c, _| activation::rights_replay(c, destination, now_millis())).await
    }

    pub(crate) async fn receipts(&self, id: ProfileId) -> Result<Vec<ReceiptView>> {
        self.read(move |c| privacy::receipts(c, id.0)).await
    }

    pub(crate) async fn consent_changes_since(&self, seq: i64) -> Result<Vec<ConsentChange>> {
        self.read(move |c| privacy::consent_changes_since(c, seq)).await
    }

    pub(crate) async fn privacy_version(&self) -> Result<(i64, i64)> {
        self.read(privacy::privacy_version).await
    }

    pub(crate) async fn verify_receipts(&self) -> Result<ChainReport> {
        self.read(privacy::verify_receipts).await
    }

    pub(crate) async fn verify_audit(&self) -> Result<ChainReport> {
        self.read(privacy::verify_audit).await
    }

    pub(crate) async fn audit_list(&self, f: AuditFilter) -> Result<Vec<AuditView>> {
        self.read(move |c| privacy::audit_list(c, &f)).await
    }

    pub(crate) async fn minimisation(&self) -> Result<Vec<MinimisationRow>> {
        self.read(privacy::minimisation).await
    }

    pub(crate) async fn dsr_get(&self, id: i64) -> Result<Option<DsrView>> {
        self.read(move |c| privacy::dsr_get(c, id)).await
    }

    pub(crate) async fn dsr_list(&self, open_only: bool, limit: usize) -> Result<Vec<DsrView>> {
        self.read(move |c| privacy::dsr_list(c, open_only, limit)).await
    }

    pub(crate) async fn export(&self, id: ProfileId) -> Result<SubjectExport> {
        let master = self.inner.master_key;
        self.read(move |c| {
            let mut x = privacy::export(c, id.0)?;
            x.profile = open_profile(c, &master, x.profile)?;
            open_events(c, &master, &mut x.events)?;
            Ok(x)
        })
        .await
    }

    pub(crate) async fn tombstones(&self, suppress_only: bool) -> Result<Vec<[u8; 32]>> {
        self.read(move |c| privacy::tombstone_hashes(c, suppress_only)).await
    }

    pub(crate) async fn register_counts(&self, trait_categories: std::collections::BTreeMap<String, String>) -> Result<RegisterCounts> {
        self.read(move |c| privacy::register_counts(c, &trait_categories)).await
    }

    pub(crate) async fn find_profiles(&self, kind: IdKind, value: String) -> Result<Vec<ProfileView>> {
        let master = self.inner.master_key;
        self.read(move |c| read::find_profiles(c, kind, &value)?.into_iter().map(|p| open_profile(c, &master, p)).collect()).await
    }

    pub(crate) async fn profile(&self, id: ProfileId) -> Result<Option<ProfileView>> {
        let master = self.inner.master_key;
        self.read(move |c| read::profile(c, id.0)?.map(|p| open_profile(c, &master, p)).transpose()).await
    }

    pub(crate) async fn profile_events(&self, id: ProfileId, limit: usize, cursor: Option<EventCursor>) -> Result<EventPage> {
        let master = self.inner.master_key;
        self.read(move |c| {
            let mut page = read::profile_events(c, id.0, limit, cursor)?;
            open_events(c, &master, &mut page.events)?;
            Ok(page)
        })
        .await
    }

    pub(crate) async fn merges(&self, id: ProfileId) -> Result<Vec<MergeView>> {
        self.read(move |c| read::merges(c, id.0)).await
    }

    pub(crate) async fn conflicts(&self, id: ProfileId) -> Result<Vec<ConflictView>> {
        self.read(move |c| read::conflicts(c, id.0)).await
    }

    pub(crate) async fn ping(&self) -> Result<()> {
        if self.inner.sync_failed.failed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(StoreError::SyncFailed);
        }
        self.read(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?)).await
    }

    pub(crate) async fn totals(&self) -> Result<Totals> {
        self.read(read::totals).await
    }

    pub(crate) fn fail_next_sync(&self) {
        self.inner.sync_failed.inject_failure.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn hold_writer(&self) -> WriterHold {
        let (lock, _) = &*self.inner.gate;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        WriterHold { gate: self.inner.gate.clone() }
    }

    pub(crate) async fn close(&self) -> Result<()> {
        self.inner.checkpointer.lock().unwrap_or_else(|e| e.into_inner()).take();
        let sender = self.inner.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(sender) = sender {
            let (tx, rx) = oneshot::channel();
            if sender.send(Job::Close(tx)).is_ok() {
                let _ = rx.await;
            }
        }
        self.inner.idle_readers.lock().unwrap_or_else(|e| e.into_inner()).clear();
        Ok(())
    }
}
