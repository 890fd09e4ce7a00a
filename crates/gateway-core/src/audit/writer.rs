//! The audit writer: chains events and appends them to the journal, in groups.
//!
//! A session *stages* the events of the commands it is about to forward ([`AuditLog::stage`]):
//! under one short lock each event gets its place in the chain (seq, hash) and its journal
//! line is appended to a buffer in memory. Only then is the command forwarded, and the
//! command's results reach the client only once its event is written ([`AuditLog::flush`]):
//! whoever needs a seq durable first writes everything staged so far, from every session,
//! with one `write`, while the others find their events already written. So the journal
//! write overlaps the target's work, and one write carries the events of many sessions
//! (group commit) without a thread hand-off on the path of a command. A flusher thread also
//! writes whatever is staged at least every few milliseconds (events nobody waits for:
//! completions, session ends).
//!
//! Audit fails closed. If a write fails, its events stay staged, in order, and are retried;
//! until a write succeeds, `stage` refuses new commands and `flush` fails, so the results
//! of a command whose event is not written are withheld from the client. The indexer thread
//! copies written events into the store behind the writer (see [`crate::audit::journal`]).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use crate::audit::anchor;
use crate::audit::chain::{canonical_body, chain_hash};
use crate::audit::event::AuditEvent;
use crate::audit::indexer::{INDEX_QUEUE, IndexMsg, Indexer};
use crate::audit::journal::{self, JournalWriter, MappedJournal, SEGMENT_BYTES};
use crate::audit::jsonl::JsonlSink;
use crate::config::Durability;
use crate::error::{Error, Result};
use crate::store::Store;

/// Staged events past which the flusher is woken at once rather than at its next tick.
pub const MAX_BATCH: usize = 1024;
/// Staged events past which, while the journal cannot be written, even events nobody waits
/// for are refused: memory does not grow without bound.
const MAX_STAGED: usize = 64 * 1024;

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditStats {
    /// Events recorded (durable in the journal).
    pub events: u64,
    /// Journal writes (each holds one or more events).
    pub batches: u64,
    /// Journal writes that failed; every event in them was reported as not recorded.
    pub failed_batches: u64,
    /// Events in failed journal writes.
    pub failed_events: u64,
    /// Batches the JSON-lines file could not take.
    pub jsonl_failures: u64,
    /// Events copied into the store by this writer's indexer.
    pub indexed: u64,
    /// Signed chain heads written to the anchor sink.
    pub anchors: u64,
    /// Anchors that could not be written (retried at the next interval).
    pub anchor_failures: u64,
    /// Store transactions that failed (their events stay in the journal and are retried).
    pub index_failures: u64,
    /// Events recorded but not yet in the store.
    pub journal_lag: u64,
    /// Events staged and not yet written.
    pub queued: usize,
}

/// Handle to the audit writer; clones share one writer.
#[derive(Debug, Clone)]
pub struct AuditLog {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// The chain's head and the events staged since the last write.
    chain: Mutex<Chain>,
    /// The journal; held by whoever writes, so writes go out in chain order while sessions
    /// go on staging.
    io: Mutex<Io>,
    /// Seq of the last event written to the journal.
    durable: AtomicU64,
    /// With a mapped journal: events journaled and not yet taken by the indexer.
    backlog: std::sync::atomic::AtomicUsize,
    counters: Arc<Counters>,
    /// Wakes the flusher early (shutdown, many staged events); paired with `chain`.
    wake: std::sync::Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Counters shared by the writer, the indexer and [`AuditLog::stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) events: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) failed_batches: AtomicU64,
    pub(crate) failed_events: AtomicU64,
    pub(crate) jsonl_failures: AtomicU64,
    pub(crate) indexed: AtomicU64,
    pub(crate) index_failures: AtomicU64,
    pub(crate) anchors: AtomicU64,
    pub(crate) anchor_failures: AtomicU64,
    /// Seq of the last journaled event.
    pub(crate) journal_seq: AtomicU64,
    /// Seq of the last event in the store.
    pub(crate) indexed_seq: AtomicU64,
}

/// Knobs for tests; [`AuditLog::start`] uses the defaults.
pub(crate) struct Options {
    pub(crate) segment_bytes: u64,
    /// The writer thread waits for this before taking its first job.
    pub(crate) start_gate: Option<std::sync::mpsc::Receiver<()>>,
    pub(crate) anchoring: Option<Anchoring>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_bytes: SEGMENT_BYTES,
            start_gate: None,
            anchoring: None,
        }
    }
}

fn stopped() -> Error {
    Error::Audit("audit writer is stopped".to_string())
}

/// Events chained and not yet written.
#[derive(Debug)]
struct Chain {
    /// The chain's head: seq and hash of the last staged event.
    seq: u64,
    prev: String,
    /// Journal lines of the staged events, in order.
    lines: Vec<u8>,
    events: Vec<AuditEvent>,
    /// Why the last write failed, until one succeeds: no new command is staged meanwhile.
    failure: Option<String>,
    /// Shut down: nothing more is accepted.
    closed: bool,
    /// Stopped as a crash would stop it (tests): nothing more is written or stored.
    abandoned: bool,
    /// With `durability = "process"`: the journal written through a map when events are
    /// staged (see [`mapped`]); the first `on_map` events (`on_map_bytes` of lines) are in it.
    mapped: Option<MappedJournal>,
    on_map: usize,
    on_map_bytes: usize,
    /// Where the mapped events lie: each run starts at an event index and line byte.
    runs: Vec<mapped::Run>,
}

impl AuditLog {
    /// Recover the journal in `journal_dir` into `store` (see
    /// [`journal_dir`](crate::audit::journal::journal_dir)), then start the writer thread
    /// appending to the journal and the indexer thread copying journaled events into `store`
    /// and to `jsonl`. Fails if another process holds the journal.
    pub fn start(
        store: Arc<dyn Store>,
        durability: Durability,
        journal_dir: PathBuf,
        jsonl: Option<PathBuf>,
    ) -> Result<AuditLog> {
        AuditLog::start_with(store, durability, journal_dir, jsonl, Options::default())
    }

    /// [`start`](Self::start), signing the chain's head to `anchoring`'s sink at its
    /// interval and at shutdown. Refuses to start when the recovered chain is behind, or
    /// off, the last head this key signed there: events were cut or rewritten.
    pub fn start_anchored(
        store: Arc<dyn Store>,
        durability: Durability,
        journal_dir: PathBuf,
        jsonl: Option<PathBuf>,
        anchoring: Anchoring,
    ) -> Result<AuditLog> {
        let options = Options {
            anchoring: Some(anchoring),
            ..Options::default()
        };
        AuditLog::start_with(store, durability, journal_dir, jsonl, options)
    }

    pub(crate) fn start_with(
        store: Arc<dyn Store>,
        durability: Durability,
        journal_dir: PathBuf,
        jsonl: Option<PathBuf>,
        options: Options,
    ) -> Result<AuditLog> {
        std::fs::create_dir_all(&journal_dir)?;
        let lock = journal::lock_dir(&journal_dir, true)?.ok_or_else(|| {
            Error::Audit(format!(
                "the audit journal {} is in use by another process",
                journal_dir.display()
            ))
        })?;
        let lock = Arc::new(lock);
        let head = journal::recover(store.as_ref(), &journal_dir)?.head;
        let mut anchored = None;
        if let Some(a) = options.anchoring {
            let anchors = anchor::read_anchors(a.file.path())?;
            if let Some(problem) =
                anchor::check_head(&anchors, a.key.public(), (head.seq, &head.hash))
            {
                return Err(Error::Audit(format!(
                    "{problem} (anchors: {})",
                    a.file.path().display()
                )));
            }
            let last = anchors
                .iter()
                .filter(|x| x.signed_by(a.key.public()))
                .map(|x| x.seq)
                .max()
                .unwrap_or(0);
            anchored = Some(AnchorState {
                anchoring: a,
                last_seq: last,
                // A head recovered beyond the last anchor (a crash) is signed at once.
                last_at: (last == head.seq).then(std::time::Instant::now),
            });
        }
        let sink = jsonl.as_deref().map(JsonlSink::open).transpose()?;
        let counters = Arc::new(Counters::default());
        counters.journal_seq.store(head.seq, Ordering::Relaxed);
        counters.indexed_seq.store(head.seq, Ordering::Relaxed);
        let (index_tx, index_rx) = sync_channel(INDEX_QUEUE);
        let indexer = Indexer::new(store, sink, counters.clone(), head.seq, lock.clone());
        let indexer = std::thread::Builder::new()
            .name("audit-indexer".to_string())
            .spawn(move || indexer.run(index_rx))?;
        let fsync = durability == Durability::Fsync;
        let shared = Arc::new(Shared {
            chain: Mutex::new(Chain {
                seq: head.seq,
                prev: head.hash.clone(),
                lines: Vec::new(),
                events: Vec::new(),
                failure: None,
                closed: false,
                abandoned: false,
                mapped: (!fsync && mapped_journal_supported(&journal_dir))
                    .then(|| MappedJournal::new(&journal_dir, options.segment_bytes)),
                on_map: 0,
                on_map_bytes: 0,
                runs: Vec::new(),
            }),
            io: Mutex::new(Io {
                journal: JournalWriter::new(&journal_dir, options.segment_bytes, fsync),
                head: (head.seq, head.hash.clone()),
                index_tx,
                indexer: Some(indexer),
                lock: Some(lock),
                mapped_files: Vec::new(),
            }),
            durable: AtomicU64::new(head.seq),
            backlog: std::sync::atomic::AtomicUsize::new(0),
            counters,
            wake: std::sync::Condvar::new(),
            thread: Mutex::new(None),
        });
        let gate = options.start_gate;
        let flusher = shared.clone();
        let thread = std::thread::Builder::new()
            .name("audit-writer".to_string())
            .spawn(move || {
                if let Some(gate) = gate {
                    let _ = gate.recv();
                }
                flush_loop(&flusher, anchored)
            })?;
        *shared.thread.lock().unwrap_or_else(PoisonError::into_inner) = Some(thread);
        Ok(AuditLog { inner: shared })
    }

    fn chain(&self) -> std::sync::MutexGuard<'_, Chain> {
        self.inner.chain()
    }

    /// Chain `evs` and stage them for the next journal write; the seq of the last. An Err
    /// means they are not recorded and the command they record must not run (fail closed):
    /// the writer is stopped, or the journal cannot be written.
    pub fn stage(&self, evs: Vec<AuditEvent>) -> Result<u64> {
        self.inner.stage(evs, true)
    }

    /// Return once every event up to `seq` is written to the journal (and synced in fsync
    /// mode), writing what is staged if nobody has yet. An Err means it is not: whatever the
    /// events record must not be reported as done (their results are withheld).
    pub fn flush(&self, seq: u64) -> Result<()> {
        self.inner.flush(seq)
    }

    /// Whether every event up to `seq` is written already (no lock taken).
    pub fn is_durable(&self, seq: u64) -> bool {
        self.inner.durable.load(Ordering::Acquire) >= seq
    }

    /// Stage and write: return once the event is in the journal (and synced in fsync mode).
    /// An Err means the caller must not go on as if it were recorded (fail closed).
    pub async fn record(&self, ev: AuditEvent) -> Result<u64> {
        let seq = self.stage(vec![ev])?;
        self.flush(seq)?;
        Ok(seq)
    }

    /// Same as [`record`](Self::record) for several events, with one write.
    pub async fn record_all(&self, evs: Vec<AuditEvent>) -> Result<()> {
        if evs.is_empty() {
            return Ok(());
        }
        let seq = self.stage(evs)?;
        self.flush(seq)
    }

    /// Stage without waiting for the write: the event goes out, in order, with the next
    /// write, within a few milliseconds. While the journal cannot be written such events are
    /// still kept, up to a bound.
    pub async fn record_later(&self, ev: AuditEvent) -> Result<()> {
        self.stage_later(ev)
    }

    /// [`record_later`](Self::record_later) from synchronous code: staging never waits, so
    /// a caller need not spawn a task for it.
    pub fn stage_later(&self, ev: AuditEvent) -> Result<()> {
        self.inner.stage(vec![ev], false).map(|_| ())
    }

    /// Journal everything staged, store what the store takes, and stop both threads. Later
    /// records fail.
    pub async fn shutdown(&self) {
        self.chain().closed = true;
        self.inner.wake.notify_one();
        self.join().await;
    }

    /// Stop without writing or storing anything more, leaving the journal as a crash would
    /// (tests).
    #[cfg(test)]
    pub(crate) async fn abandon(&self) {
        {
            let mut io = self.inner.io();
            {
                let mut chain = self.chain();
                chain.closed = true;
                chain.abandoned = true;
                chain.events.clear();
                chain.lines.clear();
                // A crash leaves the open segment as it is: full size, zero-filled after
                // its last line, not cut.
                if let Some(j) = chain.mapped.take() {
                    std::mem::forget(j);
                }
            }
            let _ = io.index_tx.send(IndexMsg::Abandon);
            io.join_indexer();
            io.lock = None;
        }
        self.inner.wake.notify_one();
        self.join().await;
    }

    async fn join(&self) {
        let handle = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let joined = tokio::task::spawn_blocking(move || handle.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("audit writer thread ended abnormally");
            }
        }
    }

    /// Counters for metrics: events recorded, batches, failures, indexing progress.
    pub fn stats(&self) -> AuditStats {
        let c = &self.inner.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        AuditStats {
            events: load(&c.events),
            batches: load(&c.batches),
            failed_batches: load(&c.failed_batches),
            failed_events: load(&c.failed_events),
            jsonl_failures: load(&c.jsonl_failures),
            indexed: load(&c.indexed),
            index_failures: load(&c.index_failures),
            anchors: load(&c.anchors),
            anchor_failures: load(&c.anchor_failures),
            journal_lag: load(&c.journal_seq).saturating_sub(load(&c.indexed_seq)),
            queued: self.chain().events.len(),
        }
    }
}

impl Shared {
    fn chain(&self) -> std::sync::MutexGuard<'_, Chain> {
        self.chain.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn io(&self) -> std::sync::MutexGuard<'_, Io> {
        self.io.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Chain and stage `evs`. `strict`: refused while the journal cannot be written (they
    /// record commands about to run); otherwise kept up to [`MAX_STAGED`].
    fn stage(&self, evs: Vec<AuditEvent>, strict: bool) -> Result<u64> {
        // Serialised before the lock: only hashing and copying happen under it.
        let bodies = evs
            .iter()
            .map(canonical_body)
            .collect::<Result<Vec<String>>>()?;
        let mut chain = self.chain();
        if chain.closed {
            return Err(stopped());
        }
        // Written through a map, a stage is tried on its own (it opens a segment if need be);
        // written by `write`, nothing is accepted while the last write failed.
        if chain.mapped.is_none()
            && let Some(why) = &chain.failure
            && (strict || chain.events.len() >= MAX_STAGED)
        {
            return Err(Error::Audit(why.clone()));
        }
        let chain = &mut *chain;
        // Lines are appended in place; on a serialisation failure (which the derived
        // serialiser cannot produce) or a journal that cannot take them, the stage is undone.
        let (mark, count, seq) = (chain.lines.len(), chain.events.len(), chain.seq);
        for (mut ev, body) in evs.into_iter().zip(bodies) {
            chain.seq += 1;
            ev.seq = chain.seq;
            ev.hash = chain_hash(&chain.prev, chain.seq, &body);
            ev.prev_hash = std::mem::replace(&mut chain.prev, ev.hash.clone());
            if let Err(e) = journal::push_line(&mut chain.lines, &ev, &body) {
                chain.prev = ev.prev_hash;
                chain.unstage(mark, count, seq);
                return Err(e);
            }
            chain.events.push(ev);
        }
        if let Err(e) = self.map_staged(chain, strict) {
            chain.unstage(mark, count, seq);
            return Err(e);
        }
        if chain.events.len() >= MAX_BATCH {
            self.wake.notify_one();
        }
        Ok(chain.seq)
    }

    /// Write everything staged if `seq` is not written yet.
    fn flush(&self, seq: u64) -> Result<()> {
        if self.durable.load(Ordering::Acquire) >= seq {
            self.wait_for_indexer();
            return Ok(());
        }
        {
            let mut chain = self.chain();
            if chain.mapped.is_some() {
                self.map_staged(&mut chain, true)?;
                return if self.durable.load(Ordering::Acquire) >= seq {
                    Ok(())
                } else {
                    Err(Error::Audit(format!("audit event {seq} was never staged")))
                };
            }
        }
        let mut io = self.io();
        // Another writer may have taken it along while this one waited.
        if self.durable.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        let (lines, events) = {
            let mut chain = self.chain();
            if chain.abandoned {
                return Err(stopped());
            }
            (
                {
                    // The next batch is likely as large: one allocation instead of regrowing.
                    let next = Vec::with_capacity(chain.lines.len().min(MAX_REUSE));
                    std::mem::replace(&mut chain.lines, next)
                },
                std::mem::take(&mut chain.events),
            )
        };
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Err(Error::Audit(format!("audit event {seq} was never staged")));
        };
        let (first, last) = (first.seq, last.seq);
        let n = events.len() as u64;
        let c = &self.counters;
        let written = catch_unwind(AssertUnwindSafe(|| io.append(first, &lines)))
            .unwrap_or_else(|_| Err(Error::Audit("audit journal write panicked".to_string())));
        match written {
            Ok(at) => {
                if let Some(ev) = events.last() {
                    io.head = (ev.seq, ev.hash.clone());
                }
                self.durable.store(last, Ordering::Release);
                c.events.fetch_add(n, Ordering::Relaxed);
                c.batches.fetch_add(1, Ordering::Relaxed);
                c.journal_seq.store(last, Ordering::Relaxed);
                let cleared = {
                    let mut chain = self.chain();
                    chain.failure.take().is_some()
                };
                if cleared {
                    tracing::info!("the audit journal is writable again");
                }
                io.to_indexer(IndexMsg::Batch {
                    events,
                    lines,
                    at: Some(at),
                });
                Ok(())
            }
            Err(e) => {
                c.failed_batches.fetch_add(1, Ordering::Relaxed);
                c.failed_events.fetch_add(n, Ordering::Relaxed);
                // Keep them first in line: they are chained, and what follows builds on them.
                let mut chain = self.chain();
                let mut kept_lines = lines;
                kept_lines.extend_from_slice(&chain.lines);
                chain.lines = kept_lines;
                let mut kept = events;
                kept.append(&mut chain.events);
                chain.events = kept;
                let why = format!("audit is unavailable: {e}");
                if chain.failure.is_none() {
                    tracing::error!(error = %e, "the audit journal cannot be written; no command runs until it can");
                }
                chain.failure = Some(why.clone());
                Err(Error::Audit(why))
            }
        }
    }
}

/// Whether the journal directory takes the mapped journal: its blocks must be reservable, or
/// a full disk would fault a store into the map. Where they are not, events are written with
/// `write`, as with fsync (group commit, without the fsync).
fn mapped_journal_supported(dir: &std::path::Path) -> bool {
    match mapped_file::MappedFile::supported_in(dir) {
        Ok(true) => true,
        Ok(false) => {
            tracing::warn!(dir = %dir.display(), "the audit journal's file system cannot reserve blocks; events are written with write() instead of through a map");
            false
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot probe the audit journal's file system; events are written with write() instead of through a map");
            false
        }
    }
}

/// Bytes of line buffer a new batch starts with, at most.
const MAX_REUSE: usize = 1 << 20;

/// How often staged events are written when no session needs them written sooner.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(5);

mod anchoring;
mod flusher;
mod io;
mod mapped;
#[cfg(test)]
mod tests;

use anchoring::AnchorState;
pub use anchoring::Anchoring;
use flusher::flush_loop;
use io::Io;
