//! The SQLite backend: an intake journal that acknowledges batches, one writer thread
//! (group commit) that applies them and runs every other write, a pool of read connections.

mod intake;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Condvar, Mutex};

use confidant_core::identity::IdentityRules;
use confidant_core::ids::ProfileId;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::shared::graph::IdentityCache;
use crate::shared::{Backend, ExecFlags};
use crate::sql::Conn;
use crate::{IngestBatch, IngestReport, MergeView, Result, SqliteOptions, StoreError};

/// Migrations, applied in order; `PRAGMA user_version` records how many have run.
pub(crate) const MIGRATIONS: &[&str] = &[
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
    include_str!("../../migrations/sqlite/0012_intake.sql"),
];

fn configure(conn: &Connection, writer: bool) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // Room for every statement the store prepares (rusqlite keeps 16 by default). The writer's
    // ingestion path alone uses more than 16 different statements: with the default, it
    // compiled some of them again for every message that created or joined a profile.
    conn.set_prepared_statement_cache_capacity(256);
    // secure_delete overwrites deleted content with zeros, so erased data does not linger
    // in free pages; temp_store keeps sorts and temporary tables out of files.
    conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON; PRAGMA temp_store = MEMORY;")?;
    if writer {
        // For a new database only. Measured: 1 KiB and 2 KiB pages ingest slower (BENCHMARKS.md).
        conn.execute_batch("PRAGMA page_size = 4096;")?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", (), |r| r.get(0))?;
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
    let version: i64 = conn.query_row("PRAGMA user_version", (), |r| r.get(0))?;
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
                match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", (), |r| Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))) {
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

/// Shared with the syncer.
#[derive(Default)]
pub(crate) struct SyncState {
    /// Set when an fsync failed (the intake journal's or the WAL's): writes are refused from
    /// then on.
    pub(crate) failed: std::sync::atomic::AtomicBool,
    /// Set when the WAL's fsync failed: then not even acknowledged batches are applied (the
    /// next start applies them from the journal).
    pub(crate) wal_failed: std::sync::atomic::AtomicBool,
    /// Tests only: the intake journal's next fsync reports an error.
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
pub(crate) type Run = Box<dyn FnOnce(Option<(&Conn<'_>, &mut IdentityCache)>) -> (bool, Answer) + Send>;

pub(crate) use crate::Hold;

pub(crate) enum Job {
    Exec { run: Run, flags: ExecFlags },
    /// A batch acknowledged by the intake journal under `seq`, to apply in that order.
    Apply { seq: u64, batch: IngestBatch, hold: Option<Hold>, duplicates: Option<Vec<bool>> },
    EnsureSources(Vec<String>, oneshot::Sender<Result<Vec<i64>>>),
    Unmerge { id: ProfileId, merge_id: Option<i64>, actor: String, reply: oneshot::Sender<Result<MergeView>> },
    Close(oneshot::Sender<()>),
}

struct Inner {
    path: PathBuf,
    /// Dropping it stops the intake thread (after `IntakeMsg::Close`).
    intake: Mutex<Option<mpsc::Sender<intake::IntakeMsg>>>,
    progress: Arc<intake::Progress>,
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

/// Process-wide SQLite settings, made once before the first connection opens.
/// Memory statistics are turned off: with them, every allocation SQLite makes takes a global
/// mutex, about a tenth of the writer's time at peak ingestion (BENCHMARKS.md). Nothing here
/// reads them.
fn configure_library() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: sqlite3_config is called before any connection of this process is opened by
        // this crate; if one was opened elsewhere first, SQLite answers SQLITE_MISUSE and
        // changes nothing, which is harmless.
        let rc = unsafe { rusqlite::ffi::sqlite3_config(rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS, 0 as std::os::raw::c_int) };
        if rc != rusqlite::ffi::SQLITE_OK {
            tracing::debug!(rc, "SQLite memory statistics left on (the library was already initialised)");
        }
    });
}

impl Sqlite {
    pub(crate) fn open(path: &Path, options: SqliteOptions) -> Result<Sqlite> {
        configure_library();
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags).map_err(|e| StoreError::Open(e.to_string()))?;
        configure(&conn, true)?;
        migrate(&mut conn)?;
        let applied: i64 = conn.query_row("SELECT applied_seq FROM intake_state WHERE id = 1", [], |r| r.get(0))?;
        let journal_key = intake::journal_key(&options.master_key);
        let recovered = intake::Journal::recover(path, &journal_key, applied as u64)?;
        let progress = Arc::new(intake::Progress::default());
        progress.set_applied(applied as u64);
        let (tx, rx) = mpsc::channel();
        // Acknowledged batches the database does not hold yet go first, in their order;
        // reads wait for them.
        if !recovered.pending.is_empty() {
            tracing::info!(batches = recovered.pending.len(), "applying acknowledged batches from the intake journal");
        }
        for (seq, batch) in recovered.pending {
            let _ = tx.send(Job::Apply { seq, batch, hold: None, duplicates: None });
        }
        progress.acked.store(recovered.journal.last(), std::sync::atomic::Ordering::Release);
        let (intake_tx, intake_rx) = mpsc::channel();
        let rules = options.rules.clone();
        let master_key = options.master_key;
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let writer_gate = gate.clone();
        let sync_failed = Arc::new(SyncState::default());
        std::thread::Builder::new()
            .name("confidant-writer".into())
            .spawn({
                let (path, sync_failed, progress, intake_tx) = (path.to_owned(), sync_failed.clone(), progress.clone(), intake_tx.clone());
                move || writer::run(conn, rx, options, writer_gate, path, sync_failed, progress, intake_tx)
            })
            .map_err(|e| StoreError::Open(e.to_string()))?;
        let reader = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(|e| StoreError::Open(e.to_string()))?;
        configure(&reader, false)?;
        let shared = intake::Shared { progress: progress.clone(), sync: sync_failed.clone(), key: journal_key, writer: tx.clone() };
        intake::start(recovered.journal, intake_rx, reader, shared).map_err(|e| StoreError::Open(e.to_string()))?;
        let checkpointer = spawn_checkpointer(path)?;
        Ok(Sqlite {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                intake: Mutex::new(Some(intake_tx)),
                progress,
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

    async fn submit<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Job) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        {
            let jobs = self.inner.jobs.lock().unwrap_or_else(|e| e.into_inner());
            let sender = jobs.as_ref().ok_or(StoreError::ShuttingDown)?;
            sender.send(make(tx)).map_err(|_| StoreError::ShuttingDown)?;
        }
        rx.await.map_err(|_| StoreError::ShuttingDown)?
    }

    pub(crate) async fn ensure_sources(&self, names: Vec<String>) -> Result<Vec<i64>> {
        self.submit(|reply| Job::EnsureSources(names, reply)).await
    }

    /// Returns once the batch is durable in the intake journal; the writer applies it next,
    /// and `hold` is dropped then.
    pub(crate) async fn ingest(&self, batch: IngestBatch, hold: Option<Hold>) -> Result<IngestReport> {
        let (reply, rx) = oneshot::channel();
        {
            let intake = self.inner.intake.lock().unwrap_or_else(|e| e.into_inner());
            let sender = intake.as_ref().ok_or(StoreError::ShuttingDown)?;
            sender.send(intake::IntakeMsg::Batch { batch, hold, reply }).map_err(|_| StoreError::ShuttingDown)?;
        }
        rx.await.map_err(|_| StoreError::ShuttingDown)?
    }

    /// Waits until every batch acknowledged so far is applied.
    pub(crate) async fn settled(&self) {
        self.inner.progress.settled().await
    }

    /// Acknowledged batches the writer could not apply (each logged as an error).
    pub(crate) fn apply_failures(&self) -> u64 {
        self.inner.progress.apply_failures.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) async fn unmerge(&self, id: ProfileId, merge_id: Option<i64>, actor: String) -> Result<MergeView> {
        self.submit(|reply| Job::Unmerge { id, merge_id, actor, reply }).await
    }

    pub(crate) async fn ping(&self) -> Result<()> {
        if self.inner.sync_failed.failed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(StoreError::SyncFailed);
        }
        self.read(|c| Ok(c.query_row("SELECT 1", (), |_| Ok(()))?)).await
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
        // The intake first: what it acknowledged reaches the writer before the writer stops.
        let intake = self.inner.intake.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(intake) = intake {
            let (tx, rx) = oneshot::channel();
            if intake.send(intake::IntakeMsg::Close(tx)).is_ok() {
                let _ = rx.await;
            }
        }
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

impl Backend for Sqlite {
    fn master_key(&self) -> [u8; 32] {
        self.inner.master_key
    }

    fn rules(&self) -> IdentityRules {
        self.inner.rules.clone()
    }

    /// Runs `f` on the writer, inside the next group commit; returns once it is durable.
    fn exec<T: Send + 'static>(
        &self,
        flags: ExecFlags,
        f: impl FnOnce(&Conn<'_>, &mut IdentityCache) -> Result<T> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T>> + Send {
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
    }

    /// Runs `f` on a read connection, off the async runtime.
    fn read<T: Send + 'static>(&self, f: impl FnOnce(&Conn<'_>) -> Result<T> + Send + 'static) -> impl std::future::Future<Output = Result<T>> + Send {
        let inner = self.inner.clone();
        async move {
        // Read what every acknowledged batch wrote.
        inner.progress.settled().await;
        let task = tokio::task::spawn_blocking(move || {
            let conn = match inner.idle_readers.lock().unwrap_or_else(|e| e.into_inner()).pop() {
                Some(c) => c,
                None => {
                    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                    let c = Connection::open_with_flags(&inner.path, flags).map_err(|e| StoreError::Open(e.to_string()))?;
                    configure(&c, false)?;
                    c
                }
            };
            let out = f(&Conn::Lite(&conn));
            let mut idle = inner.idle_readers.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < 8 {
                idle.push(conn);
            }
            out
        });
        task.await.map_err(|_| StoreError::ShuttingDown)?
        }
    }
}
