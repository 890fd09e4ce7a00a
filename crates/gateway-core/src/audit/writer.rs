//! The audit writer: chains events and appends them to the journal.
//!
//! A session that must know its event is recorded before it goes on (`record`,
//! `record_all`) appends in its own task, under one lock that keeps the chain in order: the
//! events queued without waiting (`record_later`) go first, then its own, in one write. Only
//! then does the call return. Handing the event to another thread and waiting to hear back
//! would cost two thread wake-ups per command, more than the write itself. Events queued
//! without waiting are also written by a flusher thread at least every few milliseconds.
//! An event that cannot be journaled is an error for its caller, so the command it records
//! does not run: audit fails closed. The indexer thread copies journaled events into the
//! store behind the writer (see [`crate::audit::journal`]).

use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use crate::audit::chain::{canonical_body, chain_hash};
use crate::audit::event::AuditEvent;
use crate::audit::indexer::{INDEX_QUEUE, IndexMsg, Indexer};
use crate::audit::journal::{self, JournalWriter, SEGMENT_BYTES};
use crate::audit::jsonl::JsonlSink;
use crate::config::Durability;
use crate::error::{Error, Result};
use crate::store::{ChainedEvent, Store};

/// Queued events past which the flusher is woken at once rather than at its next tick.
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
    /// Events queued without a waiter and not yet written.
    pub queued: usize,
}

/// Handle to the audit writer; clones share one writer.
#[derive(Debug, Clone)]
pub struct AuditLog {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    core: Mutex<Writer>,
    counters: Arc<Counters>,
    /// Wakes the flusher early (shutdown, a full queue).
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
        let writer = Writer {
            journal: JournalWriter::new(&journal_dir, options.segment_bytes, fsync),
            seq: head.seq,
            prev: head.hash,
            jsonl: jsonl.is_some(),
            buf: Vec::new(),
            counters: counters.clone(),
            index_tx,
            indexer: Some(indexer),
            later: Vec::new(),
            closed: false,
            abandoned: false,
            lock: Some(lock),
        };
        let shared = Arc::new(Shared {
            core: Mutex::new(writer),
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
                flush_loop(&flusher)
            })?;
        *shared.thread.lock().unwrap_or_else(PoisonError::into_inner) = Some(thread);
        Ok(AuditLog { inner: shared })
    }

    fn core(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.inner
            .core
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Append and wait until durable in the journal (and fsynced in Fsync mode). An Err means
    /// the event is NOT recorded and the caller must not run the command (fail closed).
    pub async fn record(&self, ev: AuditEvent) -> Result<u64> {
        self.core().write_now(vec![ev])
    }

    /// Same as [`record`](Self::record) for several events, with one write.
    pub async fn record_all(&self, evs: Vec<AuditEvent>) -> Result<()> {
        if evs.is_empty() {
            return Ok(());
        }
        self.core().write_now(evs).map(|_| ())
    }

    /// Queue without waiting for the write; queued events go out, in order, with the next
    /// waited-for write or within a few milliseconds.
    pub async fn record_later(&self, ev: AuditEvent) -> Result<()> {
        let mut core = self.core();
        if core.closed {
            return Err(stopped());
        }
        core.later.push(ev);
        if core.later.len() >= MAX_BATCH {
            self.inner.wake.notify_one();
        }
        Ok(())
    }

    /// Journal everything queued, store what the store takes, and stop both threads. Later
    /// records fail.
    pub async fn shutdown(&self) {
        self.core().closed = true;
        self.inner.wake.notify_one();
        self.join().await;
    }

    /// Stop without storing anything more, leaving the journal as a crash would (tests).
    #[cfg(test)]
    pub(crate) async fn abandon(&self) {
        {
            let mut core = self.core();
            core.closed = true;
            core.abandoned = true;
            core.later.clear();
            let _ = core.index_tx.send(IndexMsg::Abandon);
            core.join_indexer();
            core.lock = None;
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
            journal_lag: load(&c.journal_seq).saturating_sub(load(&c.indexed_seq)),
            queued: self.core().later.len(),
        }
    }
}

/// How often queued events are written when no waited-for write takes them along.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(5);

/// The flusher thread: writes queued events, and at shutdown the rest, then stops the indexer.
fn flush_loop(shared: &Shared) {
    let mut core = shared.core.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        if core.abandoned {
            return;
        }
        if !core.later.is_empty() {
            let events = std::mem::take(&mut core.later);
            if let Err(e) = core.write(events) {
                tracing::error!(error = %e, "queued audit events could not be recorded");
            }
        }
        if core.closed {
            break;
        }
        core = shared
            .wake
            .wait_timeout(core, FLUSH_EVERY)
            .map(|(guard, _)| guard)
            .unwrap_or_else(|e| e.into_inner().0);
    }
    if let Some(sealed) = core.journal.seal() {
        core.to_indexer(IndexMsg::Sealed(sealed));
    }
    core.to_indexer(IndexMsg::Stop);
    core.join_indexer();
    // The journal is free for the next writer or a recovery.
    core.lock = None;
}

/// The writer's state, behind the lock that keeps the chain in order.
#[derive(Debug)]
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
    /// Events queued without a waiter, written before the next batch.
    later: Vec<AuditEvent>,
    /// Shut down: nothing more is accepted.
    closed: bool,
    /// Stopped as a crash would stop it (tests): nothing more is written or stored.
    abandoned: bool,
    /// Held while the writer runs: no other process recovers or appends meanwhile.
    lock: Option<Arc<File>>,
}

impl Writer {
    /// Write the queued events and then `events` in one append; the seq of the last.
    fn write_now(&mut self, events: Vec<AuditEvent>) -> Result<u64> {
        if self.closed {
            return Err(stopped());
        }
        let mut batch = std::mem::take(&mut self.later);
        let queued = batch.len();
        batch.extend(events);
        match self.write(batch) {
            Ok(seq) => Ok(seq),
            Err(e) => {
                if queued > 0 {
                    tracing::error!(events = queued, error = %e, "queued audit events could not be recorded");
                }
                Err(e)
            }
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

    /// Journal `events` with one write; the seq of the last, or why none was recorded.
    fn write(&mut self, events: Vec<AuditEvent>) -> Result<u64> {
        let n = events.len() as u64;
        if n == 0 {
            return Ok(self.seq);
        }
        let journaled = catch_unwind(AssertUnwindSafe(|| self.journal_batch(events)))
            .unwrap_or_else(|_| Err(Error::Audit("audit journal write panicked".to_string())));
        let c = &self.counters;
        let result = match journaled {
            Ok(chained) => {
                c.events.fetch_add(n, Ordering::Relaxed);
                c.batches.fetch_add(1, Ordering::Relaxed);
                c.journal_seq.store(self.seq, Ordering::Relaxed);
                let lines = if self.jsonl {
                    Some(std::mem::take(&mut self.buf))
                } else {
                    None
                };
                self.to_indexer(IndexMsg::Batch {
                    events: chained,
                    lines,
                });
                Ok(self.seq)
            }
            Err(e) => {
                c.failed_batches.fetch_add(1, Ordering::Relaxed);
                c.failed_events.fetch_add(n, Ordering::Relaxed);
                Err(e)
            }
        };
        if self.buf.capacity() > KEEP_BUFFER {
            self.buf = Vec::new();
        }
        result
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
