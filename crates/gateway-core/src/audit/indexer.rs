//! The indexer: records journaled events in the store, behind the writer.
//!
//! It takes everything the writer has handed over (up to [`MAX_TXN`] events) into one store
//! transaction, so under load transactions grow by themselves and a quiet gateway still
//! indexes each event as soon as it is journaled. The store keeps each block's keys and its
//! byte range in the journal segment, not a copy of the lines: segments are the archive. The
//! events are durable already: if the store fails, the indexer logs it, keeps them, and
//! retries with a growing delay.

use std::collections::VecDeque;
use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use crate::audit::event::AuditEvent;
use crate::audit::journal::Written;
use crate::audit::jsonl::JsonlSink;
use crate::audit::writer::Counters;
use crate::error::{Error, Result};
use crate::store::{SegmentAt, Store};

/// Batches the writer may hand over before it waits for the indexer (backpressure).
pub(crate) const INDEX_QUEUE: usize = 1024;
/// Events per store transaction, at most.
pub(crate) const MAX_TXN: usize = 10_000;
/// Events held while the store fails; past this the indexer stops taking batches, so the
/// writer, and then the sessions, wait rather than memory growing without bound.
const MAX_PENDING: usize = 64 * 1024;
const FIRST_RETRY: Duration = Duration::from_millis(50);
const MAX_RETRY: Duration = Duration::from_secs(2);

/// What the writer hands over, in journal order.
pub(crate) enum IndexMsg {
    /// Journaled events, their journal lines, and where those lines lie.
    Batch {
        events: Vec<AuditEvent>,
        lines: Vec<u8>,
        at: Option<Written>,
    },
    /// Store what is left (one attempt) and stop.
    Stop,
    /// Stop at once (tests: a crash).
    #[cfg(test)]
    Abandon,
}

/// State owned by the indexer thread.
pub(crate) struct Indexer {
    store: Arc<dyn Store>,
    sink: Option<JsonlSink>,
    counters: Arc<Counters>,
    /// Journaled, not yet stored, in order, and their lines.
    pending: Vec<AuditEvent>,
    pending_lines: Vec<u8>,
    /// The pending lines as runs that lie contiguously in one segment, in order.
    runs: VecDeque<Run>,
    /// Seq of the last stored event.
    stored_seq: u64,
    /// After a failure: when to try again, and the delay after that.
    retry_at: Option<Instant>,
    backoff: Duration,
    _lock: Arc<File>,
}

/// How long the indexer gathers events before a commit.
const COALESCE: Duration = Duration::from_millis(10);

/// What a message asks of the loop.
enum Flow {
    Go,
    Stop,
    #[cfg(test)]
    Abandon,
}

impl Indexer {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        sink: Option<JsonlSink>,
        counters: Arc<Counters>,
        stored_seq: u64,
        lock: Arc<File>,
    ) -> Indexer {
        Indexer {
            store,
            sink,
            counters,
            pending: Vec::new(),
            pending_lines: Vec::new(),
            runs: VecDeque::new(),
            stored_seq,
            retry_at: None,
            backoff: FIRST_RETRY,
            _lock: lock,
        }
    }

    pub(crate) fn run(mut self, rx: Receiver<IndexMsg>) {
        loop {
            let first = match self.next_wait() {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(d) if d.is_zero() => Err(RecvTimeoutError::Timeout),
                Some(d) if self.pending.len() >= MAX_PENDING => {
                    std::thread::sleep(d);
                    Err(RecvTimeoutError::Timeout)
                }
                Some(d) => rx.recv_timeout(d),
            };
            let mut flow = match first {
                Ok(msg) => self.take(msg),
                Err(RecvTimeoutError::Timeout) => Flow::Go,
                Err(RecvTimeoutError::Disconnected) => Flow::Stop,
            };
            // Everything handed over within a short window goes into the same transaction:
            // a SQLite commit rewrites whole pages, so fewer, larger ones are far cheaper,
            // and the events are durable in the journal meanwhile.
            let window_end = Instant::now() + COALESCE;
            while matches!(flow, Flow::Go) && self.pending.len() < MAX_TXN {
                flow = match rx.try_recv() {
                    Ok(msg) => self.take(msg),
                    Err(TryRecvError::Disconnected) => Flow::Stop,
                    Err(TryRecvError::Empty) => {
                        let now = Instant::now();
                        if now >= window_end || self.retry_at.is_some() {
                            break;
                        }
                        // Sleep out the window rather than wake for every batch.
                        std::thread::sleep(window_end - now);
                        Flow::Go
                    }
                };
            }
            match flow {
                Flow::Go => {
                    if self.retry_at.is_none_or(|t| Instant::now() >= t) {
                        self.index();
                    }
                }
                Flow::Stop => {
                    while !self.pending.is_empty() && self.index() {}
                    if !self.pending.is_empty() {
                        tracing::error!(
                            events = self.pending.len(),
                            "audit events not stored at shutdown; they are in the journal and will be stored at the next start"
                        );
                    }
                    return;
                }
                #[cfg(test)]
                Flow::Abandon => return,
            }
        }
    }

    /// How long to wait for the next message: `None` for as long as it takes (nothing to
    /// store), zero to store now.
    fn next_wait(&self) -> Option<Duration> {
        if self.pending.is_empty() {
            return None;
        }
        Some(self.retry_at.map_or(Duration::ZERO, |t| {
            t.saturating_duration_since(Instant::now())
        }))
    }

    fn take(&mut self, msg: IndexMsg) -> Flow {
        match msg {
            IndexMsg::Batch { events, lines, at } => {
                if let Some(sink) = &mut self.sink
                    && let Err(e) = sink.write_lines(&lines)
                {
                    self.counters.jsonl_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        path = %sink.path().display(),
                        events = events.len(),
                        error = %e,
                        "audit events recorded but not written to the JSON-lines file"
                    );
                }
                let run = Run {
                    events: events.len(),
                    bytes: lines.len(),
                    at,
                };
                match self.runs.back_mut() {
                    Some(last) if last.continued_by(&run) => {
                        last.events += run.events;
                        last.bytes += run.bytes;
                    }
                    _ => self.runs.push_back(run),
                }
                if self.pending.is_empty() {
                    self.pending = events;
                    self.pending_lines = lines;
                } else {
                    self.pending.extend(events);
                    self.pending_lines.extend_from_slice(&lines);
                }
                Flow::Go
            }
            IndexMsg::Stop => Flow::Stop,
            #[cfg(test)]
            IndexMsg::Abandon => Flow::Abandon,
        }
    }

    /// Store up to [`MAX_TXN`] pending events of one run in one transaction; false if the
    /// store failed.
    fn index(&mut self) -> bool {
        let Some(run) = self.runs.front() else {
            return true;
        };
        let n = run.events.min(MAX_TXN).min(self.pending.len());
        if n == 0 {
            self.runs.pop_front();
            return true;
        }
        // Where the n-th line ends: lines hold no raw newline, one per event.
        let cut = if n == run.events {
            run.bytes.min(self.pending_lines.len())
        } else {
            self.pending_lines
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .nth(n - 1)
                .map_or(self.pending_lines.len(), |(i, _)| i + 1)
        };
        let batch = &self.pending[..n];
        let lines = &self.pending_lines[..cut];
        let at = run.at.as_ref().map(|w| SegmentAt {
            path: &w.path,
            offset: w.offset,
        });
        let stored: Result<()> = catch_unwind(AssertUnwindSafe(|| {
            self.store.insert_chained(batch, lines, at)
        }))
        .unwrap_or_else(|_| Err(Error::Store("store failed while inserting".to_string())));
        match stored {
            Ok(()) => {
                self.stored_seq = batch[n - 1].seq;
                self.pending.drain(..n);
                self.pending_lines.drain(..cut);
                if let Some(run) = self.runs.front_mut() {
                    run.advance(n, cut);
                    if run.events == 0 {
                        self.runs.pop_front();
                    }
                }
                self.retry_at = None;
                self.backoff = FIRST_RETRY;
                let c = &self.counters;
                c.indexed.fetch_add(n as u64, Ordering::Relaxed);
                c.indexed_seq.store(self.stored_seq, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.counters.index_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    events = n,
                    retry_in_ms = self.backoff.as_millis() as u64,
                    error = %e,
                    "audit events are in the journal but could not be stored; retrying"
                );
                self.retry_at = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(MAX_RETRY);
                false
            }
        }
    }
}

/// Pending events whose lines lie one after the other in one segment (or have no place).
#[derive(Debug)]
struct Run {
    events: usize,
    bytes: usize,
    at: Option<Written>,
}

impl Run {
    /// Whether `next` continues this run in the same segment, right after it.
    fn continued_by(&self, next: &Run) -> bool {
        match (&self.at, &next.at) {
            (Some(a), Some(b)) => a.path == b.path && a.offset + self.bytes as u64 == b.offset,
            (None, None) => true,
            _ => false,
        }
    }

    /// Drop the first `events` events (`bytes` bytes of lines), now stored.
    fn advance(&mut self, events: usize, bytes: usize) {
        self.events -= events;
        self.bytes -= bytes;
        if let Some(at) = &mut self.at {
            at.offset += bytes as u64;
        }
    }
}
