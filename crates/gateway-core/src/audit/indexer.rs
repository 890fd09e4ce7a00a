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
use std::path::Path;
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
    /// Batches journaled and not wholly stored, in order, as the writer handed them over:
    /// kept, not concatenated, so no event or line is copied on its way to the store.
    pending: VecDeque<Part>,
    /// Events in `pending` not yet stored.
    queued: usize,
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
            pending: VecDeque::new(),
            queued: 0,
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
                Some(d) if self.queued >= MAX_PENDING => {
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
            while matches!(flow, Flow::Go) && self.queued < MAX_TXN {
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
                    while self.queued > 0 && self.index() {}
                    if self.queued > 0 {
                        tracing::error!(
                            events = self.queued,
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
        if self.queued == 0 {
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
                self.queued += events.len();
                self.pending.push_back(Part {
                    events,
                    lines,
                    at,
                    stored: 0,
                    stored_bytes: 0,
                });
                Flow::Go
            }
            IndexMsg::Stop => Flow::Stop,
            #[cfg(test)]
            IndexMsg::Abandon => Flow::Abandon,
        }
    }

    /// Store up to [`MAX_TXN`] pending events whose lines lie one after the other in one
    /// segment (or have no place), in one transaction; false if the store failed.
    fn index(&mut self) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        let mut events: Vec<&AuditEvent> = Vec::new();
        let mut lines: Vec<&str> = Vec::new();
        // Events and line bytes taken from each leading part.
        let mut taken: Vec<(usize, usize)> = Vec::new();
        let mut at: Option<SegmentAt<'_>> = None;
        // Where the lines taken so far end: the next part must start there.
        let mut end: Option<(&Path, u64)> = None;
        let mut unreadable = None;
        for (i, part) in self.pending.iter().enumerate() {
            if events.len() >= MAX_TXN {
                break;
            }
            let start = part
                .at
                .as_ref()
                .map(|w| (&*w.path, w.offset + part.stored_bytes as u64));
            if i > 0 && start != end {
                break;
            }
            if i == 0 {
                at = start.map(|(path, offset)| SegmentAt { path, offset });
            }
            let rest = &part.lines[part.stored_bytes..];
            let left = part.events.len() - part.stored;
            let text = std::str::from_utf8(rest).ok().filter(|t| {
                // One whole line per event, or the store would index them wrongly.
                memchr::memchr_iter(b'\n', t.as_bytes()).count() == left
                    && t.ends_with('\n') == (left > 0)
            });
            let Some(text) = text else {
                unreadable = Some(format!(
                    "{left} audit events came with lines that do not match them"
                ));
                break;
            };
            let room = MAX_TXN - events.len();
            let (mut n, mut bytes) = (0, 0);
            for (ev, line) in part.events[part.stored..]
                .iter()
                .zip(text.split_terminator('\n'))
                .take(room)
            {
                events.push(ev);
                lines.push(line);
                n += 1;
                bytes += line.len() + 1;
            }
            taken.push((n, bytes));
            end = start.map(|(path, offset)| (path, offset + bytes as u64));
            if n < left {
                break;
            }
        }
        let store = &self.store;
        let stored: Result<()> = match unreadable {
            Some(why) if events.is_empty() => Err(Error::Store(why)),
            _ => catch_unwind(AssertUnwindSafe(|| {
                store.insert_chained(&events, &lines, at)
            }))
            .unwrap_or_else(|_| Err(Error::Store("store failed while inserting".to_string()))),
        };
        let n = events.len();
        let last = events.last().map(|e| e.seq);
        drop(events);
        drop(lines);
        match stored {
            Ok(()) => {
                if let Some(seq) = last {
                    self.stored_seq = seq;
                }
                for (n, bytes) in taken {
                    let Some(part) = self.pending.front_mut() else {
                        break;
                    };
                    part.stored += n;
                    part.stored_bytes += bytes;
                    if part.stored < part.events.len() {
                        break;
                    }
                    self.pending.pop_front();
                }
                self.queued -= n.min(self.queued);
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

/// A batch the writer handed over: its events, their lines, where those lie, and how much
/// of it is stored.
struct Part {
    events: Vec<AuditEvent>,
    lines: Vec<u8>,
    at: Option<Written>,
    stored: usize,
    stored_bytes: usize,
}
