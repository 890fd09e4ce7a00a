//! The single audit writer: batches events from all sessions into one journal write.
//!
//! Sessions send events over a bounded channel to one dedicated thread. The thread blocks for
//! the first job, drains whatever else is queued, chains the batch and appends it to the
//! journal with one write (group commit), and only then tells each waiting session that its
//! event is recorded. An event that cannot be journaled is reported to its waiter as an error,
//! so the command it records does not run: audit fails closed. The indexer thread copies
//! journaled events into the store behind the writer (see [`crate::audit::journal`]).

use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use crate::audit::chain::{canonical_body, chain_hash};
use crate::audit::event::AuditEvent;
use crate::audit::indexer::{INDEX_QUEUE, IndexMsg, Indexer};
use crate::audit::journal::{self, JournalWriter, SEGMENT_BYTES};
use crate::audit::jsonl::JsonlSink;
use crate::config::Durability;
use crate::error::{Error, Result};
use crate::store::{ChainedEvent, Store};

/// Jobs the channel holds before senders wait.
pub const QUEUE_CAPACITY: usize = 8192;
/// Events the writer gathers into one journal write, at most (one large `record_all` may
/// exceed it).
pub const MAX_BATCH: usize = 1024;
/// The write buffer is released after a batch larger than this rather than kept.
const KEEP_BUFFER: usize = 4 << 20;

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
    /// Store transactions that failed (their events stay in the journal and are retried).
    pub index_failures: u64,
    /// Events recorded but not yet in the store.
    pub journal_lag: u64,
    /// Jobs waiting in the channel now.
    pub queued: usize,
}

/// Handle to the audit writer; clones share one writer.
#[derive(Debug, Clone)]
pub struct AuditLog {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    tx: mpsc::Sender<Job>,
    counters: Arc<Counters>,
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
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_bytes: SEGMENT_BYTES,
            start_gate: None,
        }
    }
}

/// The seq of a job's last event, or why it was not recorded.
type Reply = oneshot::Sender<Result<u64, String>>;

// `One` is nearly every job and is the large variant: boxing it would only add an allocation
// per event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Job {
    One(AuditEvent, Option<Reply>),
    Many(Vec<AuditEvent>, Reply),
    Shutdown(oneshot::Sender<()>),
    /// Stop at once, storing nothing more: what a crash leaves behind (tests).
    #[cfg(test)]
    Abandon,
}

fn stopped() -> Error {
    Error::Audit("audit writer is stopped".to_string())
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
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let writer = Writer {
            journal: JournalWriter::new(&journal_dir, options.segment_bytes, fsync),
            seq: head.seq,
            prev: head.hash,
            jsonl: jsonl.is_some(),
            buf: Vec::new(),
            counters: counters.clone(),
            index_tx,
            indexer: Some(indexer),
            _lock: lock,
        };
        let gate = options.start_gate;
        let thread = std::thread::Builder::new()
            .name("audit-writer".to_string())
            .spawn(move || {
                if let Some(gate) = gate {
                    let _ = gate.recv();
                }
                writer.run(rx)
            })?;
        Ok(AuditLog {
            inner: Arc::new(Shared {
                tx,
                counters,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Append and wait until durable in the journal (and fsynced in Fsync mode). An Err means
    /// the event is NOT recorded and the caller must not run the command (fail closed).
    pub async fn record(&self, ev: AuditEvent) -> Result<u64> {
        let (reply, done) = oneshot::channel();
        self.send(Job::One(ev, Some(reply))).await?;
        wait(done).await
    }

    /// Same as [`record`](Self::record) for several events, with one wait.
    pub async fn record_all(&self, evs: Vec<AuditEvent>) -> Result<()> {
        if evs.is_empty() {
            return Ok(());
        }
        let (reply, done) = oneshot::channel();
        self.send(Job::Many(evs, reply)).await?;
        wait(done).await.map(|_| ())
    }

    /// Queue without waiting for the write (order is kept). Waits only for channel capacity.
    pub async fn record_later(&self, ev: AuditEvent) -> Result<()> {
        self.send(Job::One(ev, None)).await
    }

    /// Journal everything queued, store what the store takes, and stop both threads. Later
    /// records fail.
    pub async fn shutdown(&self) {
        let (ack, acked) = oneshot::channel();
        if self.inner.tx.send(Job::Shutdown(ack)).await.is_ok() {
            let _ = acked.await;
        }
        self.join().await;
    }

    /// Stop without storing anything more, leaving the journal as a crash would (tests).
    #[cfg(test)]
    pub(crate) async fn abandon(&self) {
        let _ = self.inner.tx.send(Job::Abandon).await;
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
            journal_lag: load(&c.journal_seq).saturating_sub(load(&c.indexed_seq)),
            queued: QUEUE_CAPACITY.saturating_sub(self.inner.tx.capacity()),
        }
    }

    async fn send(&self, job: Job) -> Result<()> {
        self.inner.tx.send(job).await.map_err(|_| stopped())
    }
}

async fn wait(done: oneshot::Receiver<Result<u64, String>>) -> Result<u64> {
    match done.await {
        Ok(Ok(seq)) => Ok(seq),
        Ok(Err(msg)) => Err(Error::Audit(msg)),
        // The writer went away without answering: the event may not be recorded.
        Err(_) => Err(stopped()),
    }
}

/// State owned by the writer thread.
struct Writer {
    journal: JournalWriter,
    /// The chain's head: seq and hash of the last journaled event.
    seq: u64,
    prev: String,
    /// Hand the formatted lines to the indexer for the JSON-lines file.
    jsonl: bool,
    buf: Vec<u8>,
    counters: Arc<Counters>,
    index_tx: SyncSender<IndexMsg>,
    indexer: Option<JoinHandle<()>>,
    /// Held while the writer runs: no other process recovers or appends meanwhile.
    _lock: Arc<File>,
}

/// Events of one journal write and who waits for them.
#[derive(Default)]
struct Batch {
    events: Vec<AuditEvent>,
    /// Index of each waiting job's last event, and its reply.
    waiters: Vec<(usize, Reply)>,
    /// Events queued with `record_later`: nobody hears if they fail, so the log must.
    unwaited: u64,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut acks = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut batch = Batch::default();
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    Job::One(ev, reply) => {
                        batch.events.push(ev);
                        match reply {
                            Some(reply) => batch.waiters.push((batch.events.len() - 1, reply)),
                            None => batch.unwaited += 1,
                        }
                    }
                    Job::Many(evs, reply) => {
                        batch.events.extend(evs);
                        batch.waiters.push((batch.events.len() - 1, reply));
                    }
                    Job::Shutdown(ack) => {
                        // Refuse new jobs; those already queued are still drained and stored.
                        rx.close();
                        acks.push(ack);
                    }
                    #[cfg(test)]
                    Job::Abandon => {
                        let _ = self.index_tx.send(IndexMsg::Abandon);
                        self.join_indexer();
                        return;
                    }
                }
                if batch.events.len() < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            self.commit(batch);
        }
        if let Some(sealed) = self.journal.seal() {
            self.to_indexer(IndexMsg::Sealed(sealed));
        }
        self.to_indexer(IndexMsg::Stop);
        self.join_indexer();
        for ack in acks {
            let _ = ack.send(());
        }
    }

    fn join_indexer(&mut self) {
        if let Some(handle) = self.indexer.take()
            && handle.join().is_err()
        {
            tracing::error!("audit indexer thread ended abnormally");
        }
    }

    /// Hand over to the indexer, waiting while its queue is full (backpressure).
    fn to_indexer(&self, msg: IndexMsg) {
        if self.index_tx.send(msg).is_err() {
            tracing::error!(
                "audit indexer is gone; events stay in the journal until the next start"
            );
        }
    }

    fn commit(&mut self, batch: Batch) {
        let Batch {
            events,
            waiters,
            unwaited,
        } = batch;
        let n = events.len() as u64;
        if n == 0 {
            return;
        }
        let journaled = catch_unwind(AssertUnwindSafe(|| self.journal_batch(events)))
            .unwrap_or_else(|_| Err(Error::Audit("audit journal write panicked".to_string())));
        let c = &self.counters;
        match journaled {
            Ok(chained) => {
                c.events.fetch_add(n, Ordering::Relaxed);
                c.batches.fetch_add(1, Ordering::Relaxed);
                c.journal_seq.store(self.seq, Ordering::Relaxed);
                for (last, reply) in waiters {
                    let seq = chained.get(last).map_or(0, |e| e.event.seq);
                    let _ = reply.send(Ok(seq));
                }
                let lines = if self.jsonl {
                    Some(std::mem::take(&mut self.buf))
                } else {
                    None
                };
                self.to_indexer(IndexMsg::Batch {
                    events: chained,
                    lines,
                });
            }
            Err(e) => {
                c.failed_batches.fetch_add(1, Ordering::Relaxed);
                c.failed_events.fetch_add(n, Ordering::Relaxed);
                tracing::error!(
                    events = n,
                    queued_without_waiter = unwaited,
                    error = %e,
                    "audit events could not be recorded"
                );
                let msg = e.to_string();
                for (_, reply) in waiters {
                    let _ = reply.send(Err(msg.clone()));
                }
            }
        }
        if self.buf.capacity() > KEEP_BUFFER {
            self.buf = Vec::new();
        }
    }

    /// Chain `events` after the head, append them to the journal with one write, and only
    /// then move the head. Each event is serialised once: its canonical body is hashed,
    /// spliced into its journal line and kept for the store.
    fn journal_batch(&mut self, events: Vec<AuditEvent>) -> Result<Vec<ChainedEvent>> {
        self.buf.clear();
        let first = self.seq + 1;
        let mut seq = self.seq;
        let mut prev = self.prev.clone();
        let mut chained = Vec::with_capacity(events.len());
        for mut event in events {
            let body = canonical_body(&event)?;
            seq += 1;
            let hash = chain_hash(&prev, seq, &body);
            event.seq = seq;
            event.hash = hash.clone();
            event.prev_hash = std::mem::replace(&mut prev, hash);
            journal::push_line(&mut self.buf, &event, &body)?;
            chained.push(ChainedEvent { event, body });
        }
        let appended = self.journal.append(first, seq, &self.buf);
        // A segment closed by this append goes to the indexer before the batch does.
        while let Some(sealed) = self.journal.take_sealed() {
            self.to_indexer(IndexMsg::Sealed(sealed));
        }
        appended?;
        self.seq = seq;
        self.prev = prev;
        Ok(chained)
    }
}

#[cfg(test)]
mod tests;
