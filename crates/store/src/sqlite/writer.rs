//! The writer thread: the only connection that writes. It takes every job queued since its
//! last commit and commits them in one transaction (group commit), each job inside its own
//! savepoint so that one failing job does not sink the others.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};

use confidant_core::identity::IdentityRules;
use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;

use super::Job;
use crate::shared::graph::{apply_ingest, ensure_sources, unmerge, IdentityCache};
use crate::shared::now_millis;
use super::intake::{IntakeMsg, Progress};
use crate::{MergeView, Result, SqliteOptions, StoreError};

enum Done {
    Sources(oneshot::Sender<Result<Vec<i64>>>, Result<Vec<i64>>),
    Unmerge(oneshot::Sender<Result<MergeView>>, Result<MergeView>),
    Exec(super::Answer),
}

impl Done {
    fn fail(self, e: StoreError) {
        match self {
            Done::Sources(tx, _) => drop(tx.send(Err(e))),
            Done::Unmerge(tx, _) => drop(tx.send(Err(e))),
            Done::Exec(answer) => answer(Some(e)),
        }
    }

    /// Answers the caller with the job's own result (once its commit is durable).
    fn answer(self) {
        match self {
            Done::Sources(tx, r) => drop(tx.send(r)),
            Done::Unmerge(tx, r) => drop(tx.send(r)),
            Done::Exec(answer) => answer(None),
        }
    }
}

fn job_size(job: &Job) -> usize {
    match job {
        Job::Apply { batch, .. } => batch.messages.len().max(1),
        _ => 1,
    }
}

/// Frames in the WAL (about 256 MiB) beyond which the writer checkpoints itself. Each such
/// checkpoint holds the writer back for its two fsyncs (30-70 ms measured here), so the
/// threshold trades disk space and crash-recovery time for fewer stalls: at 64 MiB the stall
/// came every 0.85 s at half peak and dominated the p99 latency (BENCHMARKS.md). The
/// checkpointer copies frames back as they come, and while the writer pauses the log starts
/// again from its beginning on its own; but a writer that never pauses would let the log
/// grow without bound, and only the writer knows a moment when nothing is being appended.
const FORCE_CHECKPOINT_FRAMES: i64 = 65_536;

/// How long the writer gathers acknowledged batches before it applies them (unless a read or
/// a caller waits). Their senders have had their answer from the intake journal, so nothing
/// but reads waits for the writer, and a read cuts the gathering short. Larger groups write
/// each touched page once for many messages: fewer WAL bytes per message, fewer commits and
/// fsyncs, and less for the disk to flush when the journal's fdatasync comes (BENCHMARKS.md).
const APPLY_WINDOW: std::time::Duration = std::time::Duration::from_millis(20);
/// How often a gathering writer looks whether a read waits.
const GATHER_POLL: std::time::Duration = std::time::Duration::from_millis(1);

/// Called by SQLite after each commit with the number of frames in the WAL.
unsafe extern "C" fn wal_hook(
    arg: *mut std::os::raw::c_void,
    _db: *mut rusqlite::ffi::sqlite3,
    _name: *const std::os::raw::c_char,
    frames: std::os::raw::c_int,
) -> std::os::raw::c_int {
    // SAFETY: `arg` points to the AtomicI64 that `run` keeps alive as long as the connection.
    unsafe { (*(arg as *const AtomicI64)).store(i64::from(frames), Ordering::Relaxed) };
    rusqlite::ffi::SQLITE_OK
}

#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    mut conn: Connection,
    rx: mpsc::Receiver<Job>,
    options: SqliteOptions,
    gate: Arc<(Mutex<bool>, Condvar)>,
    db_path: std::path::PathBuf,
    sync_failed: Arc<super::SyncState>,
    progress: Arc<Progress>,
    intake: mpsc::Sender<IntakeMsg>,
) {
    let mut closing: Option<oneshot::Sender<()>> = None;
    let syncer = match spawn_syncer(db_path, sync_failed.clone(), progress.clone()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the syncer; refusing writes");
            progress.break_off();
            while let Ok(job) = rx.recv() {
                fail_jobs(vec![job], &mut closing, || StoreError::SyncFailed);
                if let Some(c) = closing.take() {
                    let _ = c.send(());
                    return;
                }
            }
            return;
        }
    };
    let mut cache = IdentityCache::default();
    let mut data_version: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0)).unwrap_or(0);
    let wal_frames = Box::new(AtomicI64::new(0));
    // SAFETY: the handle is valid while `conn` lives; `conn` is dropped explicitly at the end
    // of this function, before `wal_frames`, and the hook only stores into it.
    unsafe {
        rusqlite::ffi::sqlite3_wal_hook(conn.handle(), Some(wal_hook), &*wal_frames as *const AtomicI64 as *mut std::os::raw::c_void);
    }
    while closing.is_none() {
        let Ok(first) = rx.recv() else { break };
        let gathering_ends = std::time::Instant::now() + APPLY_WINDOW;
        let mut size = job_size(&first);
        let mut someone_waits = !matches!(first, Job::Apply { .. });
        let mut jobs = vec![first];
        while size < options.max_commit_messages {
            let job = match rx.try_recv() {
                Ok(job) => job,
                Err(mpsc::TryRecvError::Disconnected) => break,
                // Only acknowledged batches so far, whose senders have had their answer: gather
                // more for a while, unless a read waits for them.
                Err(mpsc::TryRecvError::Empty) => {
                    let now = std::time::Instant::now();
                    if someone_waits || now >= gathering_ends || progress.read_waiting() {
                        break;
                    }
                    match rx.recv_timeout((gathering_ends - now).min(GATHER_POLL)) {
                        Ok(job) => job,
                        Err(mpsc::RecvTimeoutError::Timeout) => continue,
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            size += job_size(&job);
            someone_waits |= !matches!(job, Job::Apply { .. });
            jobs.push(job);
        }
        {
            let (lock, cv) = &*gate;
            let mut held = lock.lock().unwrap_or_else(|e| e.into_inner());
            while *held {
                held = cv.wait(held).unwrap_or_else(|e| e.into_inner());
            }
        }
        if sync_failed.failed.load(Ordering::Relaxed) {
            if sync_failed.wal_failed.load(Ordering::Relaxed) {
                progress.break_off();
                fail_jobs(jobs, &mut closing, || StoreError::SyncFailed);
                continue;
            }
            // Only the journal failed: what it acknowledged before is still applied; every
            // other write is refused, as after a failed WAL fsync.
            let (apply, other): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| matches!(j, Job::Apply { .. }));
            fail_jobs(other, &mut closing, || StoreError::SyncFailed);
            if apply.is_empty() {
                continue;
            }
            jobs = apply;
        }
        // Another process (a CLI command on the same data directory) may have changed the
        // identity graph: then nothing cached can be trusted.
        match conn.query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0)) {
            Ok(v) if v != data_version => {
                cache.clear();
                data_version = v;
            }
            _ => {}
        }
        let started = std::time::Instant::now();
        let mut truncate = false;
        let mut committed = commit_group(&mut conn, jobs, &options.rules, &options.master_key, &mut cache, &mut closing, &mut truncate, &progress);
        let took = started.elapsed();
        // Batches applied (their queue shares went with the commit): reads waiting proceed.
        match (committed.applied_seq, &committed.commit_error) {
            (Some(seq), None) => progress.set_applied(seq),
            (Some(_), Some(_)) => {
                // Acknowledged batches are in the journal, not in the database: stop here, and
                // let the next start apply them again.
                sync_failed.failed.store(true, Ordering::Relaxed);
                sync_failed.wal_failed.store(true, Ordering::Relaxed);
                progress.break_off();
                tracing::error!("acknowledged batches could not be committed; refusing writes until restart, which applies them from the intake journal");
            }
            _ => {}
        }
        if truncate && committed.commit_error.is_none() {
            // An erasure: copy everything back and empty the WAL, so that no copy of the erased
            // pages survives there. The answers wait for it, and report if it could not be done.
            if let Err(e) = truncate_wal(&conn) {
                let msg = e.to_string();
                for d in std::mem::take(&mut committed.done) {
                    match d {
                        Done::Exec(answer) => answer(Some(StoreError::WalNotTruncated(msg.clone()))),
                        other => committed.done.push(other),
                    }
                }
            } else {
                // Everything applied is now in the database file, synced: the journal's
                // copies of it go too, before the erasure is answered.
                let (done, wait) = mpsc::channel();
                if intake.send(IntakeMsg::Purge { seq: progress.applied(), done }).is_ok() {
                    let _ = wait.recv_timeout(std::time::Duration::from_secs(10));
                }
            }
            wal_frames.store(0, Ordering::Relaxed);
        }
        if took > std::time::Duration::from_millis(20) {
            tracing::debug!(messages = size, apply_ms = committed.applied.as_millis() as u64, total_ms = took.as_millis() as u64, "slow group commit");
        }
        match committed.commit_error {
            // Nothing to make durable: answer at once.
            Some(e) => committed.done.into_iter().for_each(|d| d.fail(StoreError::Conflict(format!("commit failed: {e}")))),
            None => {
                if syncer.send(Synced::Group(committed.done, committed.applied_seq)).is_err() {
                    tracing::error!("the syncer thread is gone");
                }
            }
        }
        if wal_frames.load(Ordering::Relaxed) > FORCE_CHECKPOINT_FRAMES {
            // A passive checkpoint never waits. While nothing is appended it can copy back
            // every frame; the next write transaction then starts the log from its beginning.
            // If the checkpointer is busy, try again after the next group.
            let started = std::time::Instant::now();
            let done = conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))
                .map(|(busy, log, copied)| busy == 0 && log == copied)
                .unwrap_or(false);
            tracing::debug!(done, ms = started.elapsed().as_millis() as u64, "writer checkpoint");
            if done {
                wal_frames.store(0, Ordering::Relaxed);
            }
        }
    }
    // A reader may be mid-query (a background refresh): wait for it rather than leave a WAL.
    if let Err(e) = truncate_wal(&conn) {
        tracing::warn!(error = %e, "final checkpoint failed");
    }
    drop(conn);
    // Answered by the syncer after the last fsync, so closing waits for every answer.
    if let Some(done) = closing {
        let _ = syncer.send(Synced::Closed(done));
    }
}

/// Checkpoints every frame into the database and truncates the WAL to zero bytes, waiting
/// for readers (up to about 10 s) as SQLite's busy handler allows.
fn truncate_wal(conn: &Connection) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (busy, log, copied): (i64, i64, i64) =
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        if busy == 0 && log <= 0 && copied <= 0 {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(StoreError::WalNotTruncated(format!("busy={busy} log={log} copied={copied}")));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Answers jobs with an error without touching the database; a close request is kept.
fn fail_jobs(jobs: Vec<Job>, closing: &mut Option<oneshot::Sender<()>>, err: impl Fn() -> StoreError) {
    for job in jobs {
        match job {
            // Acknowledged already: it stays in the journal for the next start to apply.
            Job::Apply { .. } => {}
            Job::EnsureSources(_, r) => drop(r.send(Err(err()))),
            Job::Unmerge { reply, .. } => drop(reply.send(Err(err()))),
            Job::Exec { run, .. } => {
                // The closure answers through what it returns; a job never run answers the error.
                let (_, answer) = run(None);
                answer(Some(err()));
            }
            Job::Close(c) => *closing = Some(c),
        }
    }
}

enum Synced {
    /// Answers to give once synced, and the last journal record the group applied.
    Group(Vec<Done>, Option<u64>),
    Closed(oneshot::Sender<()>),
}

/// The syncer: makes committed groups durable and only then answers them. The writer commits
/// with `synchronous = NORMAL` (its frames are written to the WAL but not fsynced) and goes
/// on to the next group at once; the syncer takes every group committed meanwhile, fsyncs
/// the WAL once, and answers them all. Applying group N+1 thus overlaps the fsync of group N.
///
/// Why an acknowledged group is durable: fsync covers every write made to the file before
/// it, so all frames of the groups it answers; and SQLite never overwrites WAL frames before
/// a checkpoint has copied them into the database and synced it (in NORMAL mode it syncs
/// the WAL before each checkpoint and the database after). A duplicate's answer also waits
/// for an fsync made after its original's commit. If an fsync fails, what the OS still holds
/// can no longer be trusted: those groups get an error and the store refuses every later
/// write (as PostgreSQL does), until a restart recovers from the WAL on disk.
fn spawn_syncer(db_path: std::path::PathBuf, state: Arc<super::SyncState>, progress: Arc<Progress>) -> std::io::Result<mpsc::Sender<Synced>> {
    let (tx, rx) = mpsc::channel::<Synced>();
    let wal_path = std::path::PathBuf::from(format!("{}-wal", db_path.display()));
    std::thread::Builder::new().name("confidant-sync".into()).spawn(move || {
        let mut wal: Option<std::fs::File> = None;
        while let Ok(first) = rx.recv() {
            let mut items = vec![first];
            items.extend(rx.try_iter());
            let started = std::time::Instant::now();
            let result = sync(&mut wal, &wal_path, &db_path);
            if started.elapsed() > std::time::Duration::from_millis(20) {
                tracing::debug!(groups = items.len(), fsync_ms = started.elapsed().as_millis() as u64, "slow fsync");
            }
            if let Err(e) = &result {
                state.failed.store(true, Ordering::Relaxed);
                state.wal_failed.store(true, Ordering::Relaxed);
                progress.break_off();
                tracing::error!(error = %e, "fsync failed: refusing writes until restart");
            }
            for item in items {
                match item {
                    Synced::Group(done, applied) if result.is_ok() => {
                        // The journal's records up to here are now held by the synced WAL.
                        if let Some(seq) = applied {
                            progress.durable.fetch_max(seq, Ordering::AcqRel);
                        }
                        done.into_iter().for_each(Done::answer)
                    }
                    Synced::Group(done, _) => done.into_iter().for_each(|d| d.fail(StoreError::SyncFailed)),
                    Synced::Closed(c) => drop(c.send(())),
                }
            }
        }
    })?;
    Ok(tx)
}

fn sync(wal: &mut Option<std::fs::File>, wal_path: &std::path::Path, db_path: &std::path::Path) -> std::io::Result<()> {
    if wal.is_none() {
        match std::fs::OpenOptions::new().read(true).write(true).open(wal_path) {
            Ok(f) => *wal = Some(f),
            // No WAL file: everything is in the database file itself.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return std::fs::File::open(db_path)?.sync_data(),
            Err(e) => return Err(e),
        }
    }
    match wal {
        Some(f) => f.sync_data(),
        None => Ok(()),
    }
}

/// One committed group, waiting for the fsync that makes it durable.
struct Committed {
    done: Vec<Done>,
    commit_error: Option<String>,
    applied: std::time::Duration,
    /// The last journal record applied in the group, if any.
    applied_seq: Option<u64>,
}

/// Applies and commits one group (without fsync: the syncer does that).
#[allow(clippy::too_many_arguments)]
fn commit_group(
    conn: &mut Connection,
    jobs: Vec<Job>,
    rules: &IdentityRules,
    master: &[u8; 32],
    cache: &mut IdentityCache,
    closing: &mut Option<oneshot::Sender<()>>,
    truncate: &mut bool,
    progress: &Progress,
) -> Committed {
    let started = std::time::Instant::now();
    let mut done = Vec::with_capacity(jobs.len());
    let mut applied_seq = None;
    let mut holds = Vec::new();
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            tracing::error!(error = %e, "cannot begin a write transaction");
            let msg = e.to_string();
            fail_jobs(jobs, closing, || StoreError::Conflict(format!("cannot begin a write transaction: {msg}")));
            return Committed { done: Vec::new(), commit_error: None, applied: started.elapsed(), applied_seq: None };
        }
    };
    let now = now_millis();
    for job in jobs {
        if let Job::Close(c) = job {
            *closing = Some(c);
            continue;
        }
        if let Job::Apply { seq, batch, hold, duplicates } = job {
            // Applied in order whatever happens: a batch that fails is rolled back alone,
            // counted and logged (it would be a bug: it passed every check before it was
            // acknowledged), and the journal moves past it.
            let result = tx.savepoint().map_err(StoreError::from).and_then(|mut sp| match apply_ingest(&(&*sp).into(), &batch, duplicates.as_deref(), rules, cache, now, master) {
                Ok(_) => Ok(sp.commit()?),
                Err(e) => {
                    sp.rollback()?;
                    Err(e)
                }
            });
            if let Err(e) = result {
                cache.clear();
                progress.apply_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, seq, messages = batch.messages.len(), "an acknowledged batch could not be applied");
            }
            applied_seq = Some(seq);
            holds.extend(hold);
            continue;
        }
        let mut exec_ok = false;
        let result = tx.savepoint().map_err(StoreError::from).and_then(|mut sp| {
            let out = match job {
                Job::Apply { .. } => unreachable!("handled above"),
                Job::EnsureSources(names, reply) => Done::Sources(reply, ensure_sources(&(&*sp).into(), &names, now)),
                Job::Unmerge { id, merge_id, actor, reply } => {
                    cache.clear();
                    Done::Unmerge(reply, unmerge(&(&*sp).into(), id, merge_id, &actor, now))
                }
                Job::Exec { run, flags } => {
                    if flags.changes_identities {
                        cache.clear();
                    }
                    if flags.truncate_wal {
                        *truncate = true;
                    }
                    let (ok, answer) = run(Some((&crate::sql::Conn::Lite(&sp), &mut *cache)));
                    exec_ok = ok;
                    Done::Exec(answer)
                }
                Job::Close(_) => unreachable!("handled above"),
            };
            let ok = match &out {
                Done::Sources(_, r) => r.is_ok(),
                Done::Unmerge(_, r) => r.is_ok(),
                Done::Exec(_) => exec_ok,
            };
            if ok {
                sp.commit()?;
            } else {
                cache.clear();
                sp.rollback()?;
            }
            Ok(out)
        });
        match result {
            Ok(d) => done.push(d),
            Err(e) => {
                cache.clear();
                tracing::error!(error = %e, "savepoint failed");
            }
        }
    }
    let applied = started.elapsed();
    // The journal position goes in the same transaction as the batches it covers.
    let progress_recorded = match applied_seq {
        Some(seq) => tx.execute("UPDATE intake_state SET applied_seq = ?1 WHERE id = 1", [seq as i64]).map(drop),
        None => Ok(()),
    };
    let commit_error = progress_recorded.and_then(|()| tx.commit()).err().map(|e| {
        cache.clear();
        tracing::error!(error = %e, "commit failed");
        e.to_string()
    });
    // Applied (or not, on error; then the journal keeps them): the callers' queue shares go.
    drop(holds);
    Committed { done, commit_error, applied, applied_seq }
}
