//! The intake journal: where an ingested batch becomes durable before it is applied.
//!
//! A batch is acknowledged once its record is appended to the journal and fdatasynced; the
//! writer applies it to SQLite afterwards, in journal order. The acknowledgement thus waits
//! for one small sequential append and one fdatasync, never for the writer: a WAL restart,
//! an erasure's checkpoint or a burst that queues up behind the single writer no longer
//! shows in ingestion latency (BENCHMARKS.md). Reads wait until everything acknowledged
//! before they began is applied (`Intake::settled`), so a client reads its own writes.
//!
//! Records: `[u32 length][u64 seq][sealed]`, little-endian, where `sealed` is the batch's
//! encoding (LZ4-compressed, format 2; format 1, uncompressed, is still read) under
//! AES-256-GCM with a key derived from the master key and the sequence number as associated
//! data: no personal data is readable in the journal, a record cannot be
//! moved, and a torn tail fails authentication and is ignored (it was never acknowledged).
//! The database records the last sequence number applied (`intake_state`) in the same
//! transaction as the batch; on start, every record after it is applied again, in order.
//! Segments are deleted once every record in them is applied and the WAL holding the result
//! is synced, gently and on a thread of their own; an erasure deletes every segment at once
//! and waits for it (`Journal::purge_through`).
//!
//! Threads: the intake thread numbers a group of batches, looks their message ids up and
//! writes their records; the syncer (`confidant-intake-sync`) fdatasyncs, then acknowledges
//! and hands the batches to the writer, in order. The next group is looked up and written
//! while the previous one is being synced.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use rusqlite::Connection;
use tokio::sync::oneshot;

use confidant_core::ids::{IdKind, Identifier};
use confidant_core::message::{Envelope, MessageType, RejectReason, SealedMessage};
use sha2::{Digest, Sha256};

use super::{Hold, Job, SyncState};
use crate::privacy::DropKey;
use crate::{IngestBatch, IngestReport, Result, StoreError};

/// A segment is closed and a new one begun past this size.
const SEGMENT_BYTES: u64 = 64 << 20;
/// Largest record accepted when reading back (a batch is at most 500 KB of JSON).
const MAX_RECORD: usize = 64 << 20;

/// Sequence numbers shared by the intake thread, the writer and the readers.
#[derive(Default)]
pub(crate) struct Progress {
    /// Highest sequence number acknowledged (appended and synced).
    pub(crate) acked: AtomicU64,
    /// Highest sequence number whose apply is committed, and who waits for it.
    pub(crate) applied: AtomicU64,
    pub(crate) applied_changed: tokio::sync::Notify,
    /// Highest sequence number whose apply is committed and synced: records up to it may go.
    pub(crate) durable: AtomicU64,
    /// Acknowledged batches the store then refused to apply (a bug, logged as an error).
    pub(crate) apply_failures: AtomicU64,
    /// Set when batches can no longer be applied (a failed commit or fsync): reads stop
    /// waiting for them, and the next start applies them from the journal.
    pub(crate) broken: std::sync::atomic::AtomicBool,
    /// Reads waiting in `settled`.
    readers_waiting: AtomicUsize,
}

impl Progress {
    pub(crate) fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    pub(crate) fn set_applied(&self, seq: u64) {
        self.applied.fetch_max(seq, Ordering::AcqRel);
        self.applied_changed.notify_waiters();
    }

    /// Waits until every batch acknowledged before the call is applied.
    pub(crate) async fn settled(&self) {
        let target = self.acked.load(Ordering::Acquire);
        if self.applied() >= target || self.broken.load(Ordering::Relaxed) {
            return;
        }
        // The writer stops gathering batches and applies what it holds while a read waits.
        self.readers_waiting.fetch_add(1, Ordering::AcqRel);
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _waiting = Waiting(&self.readers_waiting);
        loop {
            let notified = self.applied_changed.notified();
            if self.applied() >= target || self.broken.load(Ordering::Relaxed) {
                return;
            }
            notified.await;
        }
    }

    /// Whether a read waits for the writer.
    pub(crate) fn read_waiting(&self) -> bool {
        self.readers_waiting.load(Ordering::Acquire) > 0
    }

    pub(crate) fn break_off(&self) {
        self.broken.store(true, Ordering::Relaxed);
        self.applied_changed.notify_waiters();
    }
}

pub(crate) enum IntakeMsg {
    Batch { batch: IngestBatch, hold: Option<Hold>, reply: oneshot::Sender<Result<IngestReport>> },
    /// From the writer after an erasure has emptied the WAL: everything applied up to `seq`
    /// is in the database file, synced; delete every segment that holds only such records.
    Purge { seq: u64, done: mpsc::Sender<()> },
    Close(oneshot::Sender<()>),
}

/// What the intake thread shares with the rest of the backend.
pub(crate) struct Shared {
    pub(crate) progress: Arc<Progress>,
    pub(crate) sync: Arc<SyncState>,
    pub(crate) key: [u8; 32],
    pub(crate) writer: mpsc::Sender<Job>,
}

/// Batches numbered, looked up and written together, at most.
const MAX_GROUP: usize = 256;

/// A group of batches written to the journal and waiting for the fdatasync that acknowledges
/// them.
struct Written {
    /// The segment they were written to (a rotation may come before the group is synced).
    file: Arc<File>,
    /// Sequence number of the first batch; the others follow in order.
    first_seq: u64,
    batches: Vec<(IngestBatch, Option<Hold>, Reply, IngestReport, bool)>,
}

type Reply = oneshot::Sender<Result<IngestReport>>;

/// Starts the intake thread and its syncer. The intake thread numbers batches, tells each
/// caller which messages it already held, and writes the group to the journal; the syncer
/// fdatasyncs what was written, then acknowledges each batch and hands it to the writer, in
/// order. While one fdatasync is in flight the next group is looked up and written, and the
/// next fdatasync covers every group written meanwhile (group commit, pipelined).
pub(crate) fn start(journal: Journal, rx: mpsc::Receiver<IntakeMsg>, reader: Connection, shared: Shared) -> std::io::Result<()> {
    let Shared { progress, sync, key, writer } = shared;
    let (to_sync, written) = mpsc::channel();
    let syncer = std::thread::Builder::new().name("confidant-intake-sync".into()).spawn({
        let (progress, sync) = (progress.clone(), sync.clone());
        move || sync_written(written, &progress, &sync, writer)
    })?;
    std::thread::Builder::new().name("confidant-intake".into()).spawn(move || {
        let closing = run(journal, rx, reader, &progress, &sync, &key, &to_sync);
        // Everything written is synced and handed to the writer before the close is answered.
        drop(to_sync);
        if syncer.join().is_err() {
            tracing::error!("the intake syncer panicked");
            progress.break_off();
        }
        if let Some(c) = closing {
            let _ = c.send(());
        }
    })?;
    Ok(())
}

fn run(
    mut journal: Journal,
    rx: mpsc::Receiver<IntakeMsg>,
    reader: Connection,
    progress: &Progress,
    sync: &SyncState,
    key: &[u8; 32],
    to_sync: &mpsc::Sender<Written>,
) -> Option<oneshot::Sender<()>> {
    // Message ids acknowledged but not yet applied, by the batch that carries them: with the
    // database, they decide exactly which messages are duplicates, as the writer will.
    let mut unapplied: VecDeque<(u64, Vec<(i64, String)>)> = VecDeque::new();
    let mut unapplied_ids: HashMap<(i64, String), u32> = HashMap::new();
    let mut closing = None;
    while closing.is_none() {
        let first = match rx.recv_timeout(std::time::Duration::from_millis(200)) {
            Ok(m) => m,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                journal.drop_through(progress.durable.load(Ordering::Acquire));
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut batches = Vec::new();
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m {
                IntakeMsg::Batch { batch, hold, reply } => batches.push((batch, hold, reply)),
                IntakeMsg::Purge { seq, done } => {
                    if let Err(e) = journal.rotate(true) {
                        tracing::error!(error = %e, "cannot begin a new intake journal segment");
                    }
                    progress.durable.fetch_max(seq, Ordering::AcqRel);
                    journal.purge_through(seq);
                    let _ = done.send(());
                }
                IntakeMsg::Close(c) => closing = Some(c),
            }
            if batches.len() < MAX_GROUP && closing.is_none() {
                next = rx.try_recv().ok();
            }
        }
        // Forget ids the database now holds.
        let applied = progress.applied();
        while unapplied.front().is_some_and(|(seq, _)| *seq <= applied) {
            for id in unapplied.pop_front().map(|(_, ids)| ids).unwrap_or_default() {
                if let Some(n) = unapplied_ids.get_mut(&id) {
                    *n -= 1;
                    if *n == 0 {
                        unapplied_ids.remove(&id);
                    }
                }
            }
        }
        journal.drop_through(progress.durable.load(Ordering::Acquire));
        if batches.is_empty() {
            continue;
        }
        if sync.failed.load(Ordering::Relaxed) {
            batches.into_iter().for_each(|(_, _, reply)| drop(reply.send(Err(StoreError::SyncFailed))));
            continue;
        }
        let mut records = Vec::new();
        let mut reports = Vec::with_capacity(batches.len());
        let mut seq = journal.last();
        // One read transaction for the whole group's lookups, not one per message (each would
        // take and release a WAL read lock: a third of this thread's time at peak). Its
        // snapshot starts at the first lookup, after `applied` was read above, so it holds
        // every batch that the set of unapplied ids no longer covers.
        let snapshot = reader.execute_batch("BEGIN").is_ok();
        for (batch, _, _) in &batches {
            seq += 1;
            let mut report = IngestReport { duplicate_flags: Vec::with_capacity(batch.messages.len()), ..Default::default() };
            let mut ids = Vec::with_capacity(batch.messages.len());
            // Whether every lookup answered: if one failed, the writer looks the batch up
            // again rather than trust a guess.
            let mut exact = true;
            for m in &batch.messages {
                let id = (batch.source_id, m.envelope.message_id.clone());
                let dup = unapplied_ids.contains_key(&id)
                    || stored(&reader, &id).unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "intake duplicate lookup failed; the writer will look again");
                        exact = false;
                        false
                    });
                report.duplicate_flags.push(dup);
                if dup {
                    report.duplicates += 1;
                } else {
                    report.stored += 1;
                }
                *unapplied_ids.entry(id.clone()).or_default() += 1;
                ids.push(id);
            }
            unapplied.push_back((seq, ids));
            reports.push((report, exact));
            records.extend(seal(key, seq, batch));
        }
        if snapshot {
            let _ = reader.execute_batch("COMMIT");
        }
        let file = match journal.write(&records, seq) {
            Ok(file) => file,
            Err(e) => {
                // What the OS holds of the journal can no longer be trusted: refuse every later
                // write, as the writer does after a failed fsync; a restart recovers what was
                // synced.
                sync.failed.store(true, Ordering::Relaxed);
                tracing::error!(error = %e, "intake journal write failed: refusing writes until restart");
                batches.into_iter().for_each(|(_, _, reply)| drop(reply.send(Err(StoreError::SyncFailed))));
                continue;
            }
        };
        let first_seq = seq + 1 - batches.len() as u64;
        let batches = batches.into_iter().zip(reports).map(|((batch, hold, reply), (report, exact))| (batch, hold, reply, report, exact)).collect();
        if to_sync.send(Written { file, first_seq, batches }).is_err() {
            // The syncer is gone (it panicked); its replies were dropped, so the callers
            // already have an error. Nothing more can be acknowledged.
            sync.failed.store(true, Ordering::Relaxed);
            tracing::error!("the intake syncer is gone: refusing writes until restart");
        }
        if let Err(e) = journal.rotate(false) {
            tracing::error!(error = %e, "cannot begin a new intake journal segment");
        }
    }
    journal.finish_reaping();
    closing
}

/// The syncer: fdatasyncs each written group (with every group written while the last sync
/// ran), then acknowledges its batches and hands them to the writer, in journal order.
fn sync_written(rx: mpsc::Receiver<Written>, progress: &Progress, sync: &SyncState, writer: mpsc::Sender<Job>) {
    while let Ok(first) = rx.recv() {
        let mut groups = vec![first];
        groups.extend(rx.try_iter());
        let mut ok = !sync.failed.load(Ordering::Relaxed);
        // Every segment the groups were written to, oldest first: a group written before a
        // rotation is in the previous segment.
        let mut files: Vec<&Arc<File>> = Vec::new();
        for g in &groups {
            if !files.iter().any(|f| Arc::ptr_eq(f, &g.file)) {
                files.push(&g.file);
            }
        }
        for f in files {
            if !ok {
                break;
            }
            let result = if sync.inject_failure.swap(false, Ordering::Relaxed) { Err(std::io::Error::other("injected fsync failure")) } else { f.sync_data() };
            if let Err(e) = result {
                // What the OS holds of the journal can no longer be trusted: refuse every
                // later write; a restart recovers what was synced.
                sync.failed.store(true, Ordering::Relaxed);
                tracing::error!(error = %e, "intake journal fdatasync failed: refusing writes until restart");
                ok = false;
            }
        }
        if !ok {
            for g in groups {
                g.batches.into_iter().for_each(|(_, _, reply, _, _)| drop(reply.send(Err(StoreError::SyncFailed))));
            }
            continue;
        }
        for g in groups {
            let last = g.first_seq + g.batches.len() as u64 - 1;
            progress.acked.store(last, Ordering::Release);
            for (i, (batch, hold, reply, report, exact)) in g.batches.into_iter().enumerate() {
                let duplicates = exact.then(|| report.duplicate_flags.clone());
                if writer.send(Job::Apply { seq: g.first_seq + i as u64, batch, hold, duplicates }).is_err() {
                    tracing::error!("the writer is gone; acknowledged batches wait in the journal for the next start");
                    progress.break_off();
                }
                let _ = reply.send(Ok(report));
            }
        }
    }
}

fn stored(reader: &Connection, (source, message_id): &(i64, String)) -> rusqlite::Result<bool> {
    reader.prepare_cached("SELECT 1 FROM events WHERE source_id = ?1 AND message_id = ?2")?.exists(rusqlite::params![source, message_id])
}

/// The journal key: the master key is never used directly for two purposes.
pub(crate) fn journal_key(master: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"confidant intake journal v1\0");
    h.update(master);
    h.finalize().into()
}

pub(crate) fn seal(key: &[u8; 32], seq: u64, batch: &IngestBatch) -> Vec<u8> {
    let mut encoded = Vec::with_capacity(batch.messages.iter().map(|m| m.body.len() + 256).sum::<usize>() + 64);
    encode(batch, &mut encoded);
    let plain = compress(&encoded);
    let nonce: [u8; confidant_core::crypto::NONCE_LEN] = rand::random();
    let sealed = confidant_core::crypto::seal(key, nonce, &seq.to_le_bytes(), &plain);
    let mut record = Vec::with_capacity(12 + sealed.len());
    record.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    record.extend_from_slice(&seq.to_le_bytes());
    record.extend_from_slice(&sealed);
    record
}

/// The segments on disk: `intake/<first seq, 20 digits>.log`.
pub(crate) struct Journal {
    dir: PathBuf,
    file: Arc<File>,
    current_first: u64,
    current_len: u64,
    /// Closed segments, oldest first: (first seq, last seq, path).
    closed: Vec<(u64, u64, PathBuf)>,
    /// Last sequence number written.
    last: u64,
    /// Threads deleting segments that are no longer needed, and the flag that tells them to
    /// stop pausing.
    reaping: Vec<std::thread::JoinHandle<()>>,
    hurry: Arc<std::sync::atomic::AtomicBool>,
}

/// What the journal held after the last applied record, to apply again on start.
pub(crate) struct Recovered {
    pub(crate) journal: Journal,
    pub(crate) pending: Vec<(u64, IngestBatch)>,
}

impl Journal {
    /// Opens the journal beside the database, reads back every record after `applied`, and
    /// begins a new segment for what comes next.
    pub(crate) fn recover(db_path: &Path, key: &[u8; 32], applied: u64) -> Result<Recovered> {
        let dir = intake_dir(db_path);
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::Open(format!("cannot create the intake journal directory: {e}")))?;
        let mut names: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
            .map_err(|e| StoreError::Open(format!("cannot read the intake journal: {e}")))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let p = e.path();
                let first = p.file_stem()?.to_str()?.parse::<u64>().ok()?;
                (p.extension()? == "log").then_some((first, p))
            })
            .collect();
        names.sort();
        let mut pending = Vec::new();
        let mut closed = Vec::new();
        let mut last = applied;
        let count = names.len();
        for (i, (first, path)) in names.into_iter().enumerate() {
            let bytes = std::fs::read(&path).map_err(|e| StoreError::Open(format!("cannot read the intake journal: {e}")))?;
            if bytes.is_empty() {
                std::fs::remove_file(&path).map_err(|e| StoreError::Open(format!("cannot delete an empty intake segment: {e}")))?;
                continue;
            }
            let mut at = 0;
            let mut seg_last = first.saturating_sub(1);
            while let Some((seq, sealed, next)) = next_record(&bytes, at) {
                let Ok(plain) = confidant_core::crypto::open(key, &seq.to_le_bytes(), sealed) else {
                    // Only the very end of the journal may be torn (a crash mid-append, never
                    // acknowledged). Anywhere else it is another key or damage: refuse.
                    if i + 1 < count || next_record(&bytes, next).is_some() {
                        return Err(StoreError::Open(format!(
                            "the intake journal cannot be read with this master key (record {seq} fails authentication); start with the key it was written with"
                        )));
                    }
                    break;
                };
                let batch = open_plain(&plain).ok_or_else(|| StoreError::Open(format!("intake journal record {seq} is unreadable")))?;
                if seq > applied {
                    pending.push((seq, batch));
                }
                seg_last = seq;
                last = last.max(seq);
                at = next;
            }
            if at < bytes.len() {
                tracing::warn!(ignored_bytes = bytes.len() - at, "intake journal: a torn record at its end, never acknowledged, ignored");
                if at == 0 {
                    // Nothing readable: keep it aside rather than reuse its name.
                    let aside = path.with_extension("torn");
                    std::fs::rename(&path, &aside).map_err(|e| StoreError::Open(format!("cannot set a torn intake segment aside: {e}")))?;
                    continue;
                }
                // Cut the torn bytes off, so the segment reads cleanly once it is not the last.
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| {
                        f.set_len(at as u64)?;
                        f.sync_all()
                    })
                    .map_err(|e| StoreError::Open(format!("cannot cut a torn record off the intake journal: {e}")))?;
            }
            closed.push((first, seg_last, path));
        }
        let journal = Journal::begin(dir, last + 1, closed, last)?;
        Ok(Recovered { journal, pending })
    }

    fn begin(dir: PathBuf, first: u64, closed: Vec<(u64, u64, PathBuf)>, last: u64) -> Result<Journal> {
        let path = dir.join(format!("{first:020}.log"));
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::Open(format!("cannot create an intake journal segment: {e}")))?;
        // The new name must be durable before a record in it is acknowledged.
        File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| StoreError::Open(format!("cannot sync the intake journal directory: {e}")))?;
        Ok(Journal { dir, file: Arc::new(file), current_first: first, current_len: 0, closed, last, reaping: Vec::new(), hurry: Arc::default() })
    }

    pub(crate) fn last(&self) -> u64 {
        self.last
    }

    /// Writes records (made by `seal` with consecutive sequence numbers after `last`) to the
    /// current segment, without syncing them: returns the segment, for the syncer.
    pub(crate) fn write(&mut self, records: &[u8], last: u64) -> std::io::Result<Arc<File>> {
        (&*self.file).write_all(records)?;
        self.current_len += records.len() as u64;
        self.last = last;
        Ok(self.file.clone())
    }

    /// Writes records and syncs them.
    #[cfg(test)]
    pub(crate) fn append(&mut self, records: &[u8], last: u64) -> std::io::Result<()> {
        self.write(records, last)?.sync_data()
    }

    /// Closes the current segment once it is large, or when `force`.
    pub(crate) fn rotate(&mut self, force: bool) -> Result<()> {
        if self.current_len == 0 || (!force && self.current_len < SEGMENT_BYTES) {
            return Ok(());
        }
        let mut next = Journal::begin(self.dir.clone(), self.last + 1, Vec::new(), self.last)?;
        next.closed = std::mem::take(&mut self.closed);
        next.reaping = std::mem::take(&mut self.reaping);
        next.hurry = self.hurry.clone();
        let old = std::mem::replace(self, next);
        self.closed.push((old.current_first, old.last, self.dir.join(format!("{:020}.log", old.current_first))));
        Ok(())
    }

    /// Closed segments whose records are all applied and synced, taken off the list.
    fn take_through(&mut self, durable: u64) -> Vec<PathBuf> {
        let (gone, kept) = std::mem::take(&mut self.closed).into_iter().partition(|(_, last, _)| *last <= durable);
        self.closed = kept;
        gone.into_iter().map(|(_, _, path)| path).collect()
    }

    /// Deletes every closed segment whose records are all applied and synced, on a thread of
    /// its own: unlinking a 64 MiB segment drops its cached pages, which took the intake
    /// thread 13 to 27 ms, during which no batch was acknowledged.
    pub(crate) fn drop_through(&mut self, durable: u64) {
        self.reaping.retain(|t| !t.is_finished());
        let gone = self.take_through(durable);
        if gone.is_empty() {
            return;
        }
        match std::thread::Builder::new().name("confidant-intake-reap".into()).spawn({
            let (gone, hurry) = (gone.clone(), self.hurry.clone());
            move || delete_segments(&gone, Some(&hurry))
        }) {
            Ok(t) => self.reaping.push(t),
            Err(_) => delete_segments(&gone, None),
        }
    }

    /// Deletes every closed segment whose records are all applied and synced, and waits until
    /// every segment deleted before is gone (an erasure relies on it).
    pub(crate) fn purge_through(&mut self, durable: u64) {
        self.finish_reaping();
        let gone = self.take_through(durable);
        delete_segments(&gone, None);
    }

    /// Waits for the segments being deleted, telling their threads to hurry.
    pub(crate) fn finish_reaping(&mut self) {
        self.hurry.store(true, Ordering::Relaxed);
        for t in self.reaping.drain(..) {
            let _ = t.join();
        }
        self.hurry.store(false, Ordering::Relaxed);
    }

    /// Segments on disk.
    #[cfg(test)]
    pub(crate) fn segments(&self) -> usize {
        self.closed.len() + 1
    }
}

/// Deletes segments. With `gently`, each is first cut down a step at a time with a pause
/// between steps, until the flag it points to (hurry) is set: freeing a whole 64 MiB segment
/// at once (dropping its cached pages, freeing its blocks and, on a filesystem mounted with
/// `discard` as this machine's is, discarding them on the device) coincided with the
/// journal's slowest fdatasyncs, 17 to 36 ms, and every acknowledgement waits for those
/// (BENCHMARKS.md).
///
/// A segment that cannot be deleted now is left on disk; the next start reads past its
/// records (all applied) and deletes it then.
fn delete_segments(paths: &[PathBuf], gently: Option<&std::sync::atomic::AtomicBool>) {
    for path in paths {
        if let Some(hurry) = gently {
            if let Err(e) = cut_down(path, hurry) {
                tracing::debug!(error = %e, "cannot shorten an intake journal segment before deleting it");
            }
        }
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(error = %e, "cannot delete an intake journal segment"),
        }
    }
}

/// Bytes freed per step, and the pause after each, when a segment is deleted gently: 1 MiB
/// at a time, and at most 200 MiB a second, far above the rate at which the journal fills
/// (about 30 MiB a second at peak here).
const CUT_STEP: u64 = 1 << 20;
const CUT_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

fn cut_down(path: &Path, hurry: &std::sync::atomic::AtomicBool) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    let mut len = file.metadata()?.len();
    while len > 0 && !hurry.load(Ordering::Relaxed) {
        len = len.saturating_sub(CUT_STEP);
        file.set_len(len)?;
        std::thread::sleep(CUT_PAUSE);
    }
    Ok(())
}

pub(crate) fn intake_dir(db_path: &Path) -> PathBuf {
    let mut name = db_path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push("-intake");
    db_path.with_file_name(name)
}

fn next_record(bytes: &[u8], at: usize) -> Option<(u64, &[u8], usize)> {
    let head = bytes.get(at..at + 12)?;
    let len = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
    let seq = u64::from_le_bytes(head[4..12].try_into().ok()?);
    if len == 0 || len > MAX_RECORD {
        return None;
    }
    let sealed = bytes.get(at + 12..at + 12 + len)?;
    Some((seq, sealed, at + 12 + len))
}

// The batch's encoding: length-prefixed fields in a fixed order. Only this file reads it,
// and only records written by the same version: a journal is applied at the next start.

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u64(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}
fn put_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
        None => out.push(0),
    }
}

fn encode(batch: &IngestBatch, out: &mut Vec<u8>) {
    out.push(1); // format version
    put_u64(out, batch.source_id as u64);
    put_u64(out, batch.messages.len() as u64);
    for m in &batch.messages {
        let e = &m.envelope;
        put_str(out, e.kind.as_str());
        put_str(out, &e.message_id);
        put_opt(out, e.event.as_deref());
        put_u64(out, e.timestamp as u64);
        put_u64(out, e.received_at as u64);
        put_u64(out, e.identifiers.len() as u64);
        for i in &e.identifiers {
            put_str(out, i.kind.as_str());
            put_str(out, &i.value);
        }
        put_opt(out, e.previous_id.as_deref());
        put_opt(out, e.category.as_deref());
        put_u64(out, m.traits.len() as u64);
        for (k, v) in &m.traits {
            put_str(out, k);
            put_str(out, v);
        }
        put_str(out, &m.body);
        put_u64(out, m.encrypted.len() as u64);
        for (k, v) in &m.encrypted {
            put_str(out, k);
            put_str(out, v);
        }
        put_u64(out, m.encrypted_traits.len() as u64);
        for k in &m.encrypted_traits {
            put_str(out, k);
        }
    }
    put_u64(out, batch.rejected.len() as u64);
    for r in &batch.rejected {
        put_str(out, r.code());
    }
    put_u64(out, batch.drops.len() as u64);
    for (k, n) in &batch.drops {
        put_str(out, &k.event);
        put_str(out, &k.field);
        put_str(out, &k.reason);
        put_u64(out, *n);
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }
    fn u64(&mut self) -> Option<u64> {
        let v = u64::from_le_bytes(self.bytes.get(self.at..self.at + 8)?.try_into().ok()?);
        self.at += 8;
        Some(v)
    }
    fn len(&mut self) -> Option<usize> {
        let n = self.u64()? as usize;
        (n <= self.bytes.len()).then_some(n)
    }
    fn str(&mut self) -> Option<String> {
        let n = self.len()?;
        let s = std::str::from_utf8(self.bytes.get(self.at..self.at + n)?).ok()?.to_owned();
        self.at += n;
        Some(s)
    }
    fn opt(&mut self) -> Option<Option<String>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.str()?)),
            _ => None,
        }
    }
    fn pairs(&mut self) -> Option<Vec<(String, String)>> {
        (0..self.len()?).map(|_| Some((self.str()?, self.str()?))).collect()
    }
}

/// Format 2: LZ4 (block, with the decompressed size first) of a format-1 encoding. Journal
/// records are JSON bodies for the most part, which LZ4 shrinks about threefold: fewer bytes
/// for each acknowledgement's fdatasync to wait for, and for the disk to flush.
const COMPRESSED: u8 = 2;

fn compress(encoded: &[u8]) -> Vec<u8> {
    // Compressed straight into the record's buffer, behind the format byte and the size (as
    // `decompress_size_prepended` reads it), rather than into a second buffer and copied.
    let mut out = vec![0; 5 + lz4_flex::block::get_maximum_output_size(encoded.len())];
    out[0] = COMPRESSED;
    out[1..5].copy_from_slice(&(encoded.len() as u32).to_le_bytes());
    // The buffer has the largest size LZ4 can produce, so compressing into it cannot fail.
    let n = lz4_flex::block::compress_into(encoded, &mut out[5..]).unwrap_or_else(|e| unreachable!("{e}"));
    out.truncate(5 + n);
    out
}

/// Reads a record's plaintext: format 2 (compressed), or format 1 as journals written before
/// compression hold it.
fn open_plain(plain: &[u8]) -> Option<IngestBatch> {
    match plain.first()? {
        &COMPRESSED => {
            let packed = &plain[1..];
            let size = u32::from_le_bytes(packed.get(..4)?.try_into().ok()?) as usize;
            if size > MAX_RECORD {
                return None;
            }
            decode(&lz4_flex::block::decompress_size_prepended(packed).ok()?)
        }
        _ => decode(plain),
    }
}

fn decode(bytes: &[u8]) -> Option<IngestBatch> {
    let mut r = Reader { bytes, at: 0 };
    if r.u8()? != 1 {
        return None;
    }
    let source_id = r.u64()? as i64;
    let messages = (0..r.len()?)
        .map(|_| {
            let kind = MessageType::from_name(&r.str()?)?;
            let message_id = r.str()?;
            let event = r.opt()?;
            let timestamp = r.u64()? as i64;
            let received_at = r.u64()? as i64;
            let identifiers =
                (0..r.len()?).map(|_| Some(Identifier::new(IdKind::from_name(&r.str()?)?, r.str()?))).collect::<Option<Vec<_>>>()?;
            let previous_id = r.opt()?;
            let category = r.opt()?;
            let envelope = Envelope { kind, message_id, event, timestamp, received_at, identifiers, previous_id, category };
            let traits = r.pairs()?;
            let body = r.str()?;
            let encrypted = r.pairs()?;
            let encrypted_traits = (0..r.len()?).map(|_| r.str()).collect::<Option<Vec<_>>>()?;
            Some(SealedMessage { envelope, traits, body, encrypted, encrypted_traits })
        })
        .collect::<Option<Vec<_>>>()?;
    let rejected = (0..r.len()?)
        .map(|_| {
            let code = r.str()?;
            RejectReason::ALL.into_iter().find(|x| x.code() == code)
        })
        .collect::<Option<Vec<_>>>()?;
    let drops = (0..r.len()?)
        .map(|_| Some((DropKey { event: r.str()?, field: r.str()?, reason: r.str()? }, r.u64()?)))
        .collect::<Option<Vec<_>>>()?;
    (r.at == bytes.len()).then_some(IngestBatch { source_id, messages, rejected, drops })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> IngestBatch {
        let envelope = Envelope {
            kind: MessageType::Identify,
            message_id: "m1".into(),
            event: None,
            timestamp: 1_700_000_000_000,
            received_at: 1_700_000_000_500,
            identifiers: vec![Identifier::new(IdKind::UserId, "u1"), Identifier::new(IdKind::Email, "ada@example.com")],
            previous_id: Some("anon".into()),
            category: Some("behaviour".into()),
        };
        IngestBatch {
            source_id: 3,
            messages: vec![SealedMessage {
                envelope,
                traits: vec![("email".into(), "\"ada@example.com\"".into())],
                body: "{\"type\":\"identify\"}".into(),
                encrypted: vec![("\"p\"".into(), "42".into())],
                encrypted_traits: vec!["health".into()],
            }],
            rejected: vec![RejectReason::InvalidEmail, RejectReason::Suppressed],
            drops: vec![(DropKey { event: "identify".into(), field: "ssn".into(), reason: "undeclared".into() }, 2)],
        }
    }

    fn same(a: &IngestBatch, b: &IngestBatch) -> bool {
        let (ma, mb) = (&a.messages[0], &b.messages[0]);
        a.source_id == b.source_id
            && a.rejected == b.rejected
            && a.drops == b.drops
            && ma.envelope.kind == mb.envelope.kind
            && ma.envelope.message_id == mb.envelope.message_id
            && ma.envelope.timestamp == mb.envelope.timestamp
            && ma.envelope.received_at == mb.envelope.received_at
            && ma.envelope.identifiers == mb.envelope.identifiers
            && ma.envelope.previous_id == mb.envelope.previous_id
            && ma.envelope.category == mb.envelope.category
            && ma.traits == mb.traits
            && ma.body == mb.body
            && ma.encrypted == mb.encrypted
            && ma.encrypted_traits == mb.encrypted_traits
    }

    #[test]
    fn a_batch_survives_its_encoding() {
        let b = batch();
        let mut bytes = Vec::new();
        encode(&b, &mut bytes);
        assert!(same(&b, &decode(&bytes).unwrap()));
        // Truncated or padded encodings are refused, not misread.
        assert!(decode(&bytes[..bytes.len() - 1]).is_none());
        bytes.push(0);
        assert!(decode(&bytes).is_none());
        bytes.pop();
        // Compressed (format 2), and smaller; format 1, as older journals hold it, still reads.
        let packed = compress(&bytes);
        assert!(packed.len() < bytes.len());
        assert!(same(&b, &open_plain(&packed).unwrap()));
        assert!(same(&b, &open_plain(&bytes).unwrap()));
        assert!(open_plain(&packed[..packed.len() - 1]).is_none());
        let mut huge = packed.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(open_plain(&huge).is_none(), "a size beyond any record is refused before allocating");
    }

    #[test]
    fn records_are_sealed_bound_to_their_number_and_torn_tails_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("confidant.db");
        let key = journal_key(&[9; 32]);
        let Recovered { mut journal, pending } = Journal::recover(&db, &key, 0).unwrap();
        assert!(pending.is_empty());
        let mut records = seal(&key, 1, &batch());
        records.extend(seal(&key, 2, &batch()));
        journal.append(&records, 2).unwrap();
        // Nothing readable in the file.
        let raw = std::fs::read(intake_dir(&db).join(format!("{:020}.log", 1))).unwrap();
        assert!(!raw.windows(15).any(|w| w == b"ada@example.com"));
        // A torn third record (as a crash mid-append leaves it).
        let third = seal(&key, 3, &batch());
        journal.append(&third[..third.len() / 2], 2).unwrap();
        drop(journal);
        let again = Journal::recover(&db, &key, 1).unwrap();
        assert_eq!(again.pending.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![2]);
        assert!(same(&again.pending[0].1, &batch()));
        assert_eq!(again.journal.last(), 2);
        // Another key is refused, and the journal is left as it was.
        assert!(matches!(Journal::recover(&db, &journal_key(&[8; 32]), 0), Err(StoreError::Open(m)) if m.contains("master key")));
        // Once applied and synced, old segments go.
        let mut j = again.journal;
        j.drop_through(2);
        j.finish_reaping();
        assert_eq!(j.segments(), 1);
        assert_eq!(std::fs::read_dir(intake_dir(&db)).unwrap().count(), 1);
    }

    #[test]
    fn segments_are_deleted_in_the_background_and_an_erasure_waits_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("confidant.db");
        let key = journal_key(&[9; 32]);
        let Recovered { mut journal, .. } = Journal::recover(&db, &key, 0).unwrap();
        // Three closed segments, of 8 MiB each (a gentle deletion of one takes about 40 ms).
        let filler = vec![0u8; 8 << 20];
        for seq in 1..=3 {
            journal.append(&filler, seq).unwrap();
            journal.rotate(true).unwrap();
        }
        assert_eq!(journal.segments(), 4);
        // The first is deleted on a thread of its own: the intake thread does not wait.
        journal.drop_through(1);
        assert_eq!(journal.segments(), 3);
        assert_eq!(journal.reaping.len(), 1);
        // An erasure's purge deletes the rest and returns only once every file is gone,
        // including the one still being cut down.
        journal.purge_through(3);
        assert!(journal.reaping.is_empty());
        let left: Vec<_> = std::fs::read_dir(intake_dir(&db)).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 1, "only the current segment is left: {left:?}");
        assert!(!journal.hurry.load(Ordering::Relaxed), "later deletions are gentle again");
    }
}
