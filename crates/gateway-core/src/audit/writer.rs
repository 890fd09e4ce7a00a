//! The single audit writer: batches events from all sessions into one commit.
//!
//! Sessions send events over a bounded channel to one dedicated thread. The thread blocks for
//! the first job, drains whatever else is queued, appends it all with one store call (group
//! commit) and only then tells each waiting session that its event is recorded. An event that
//! cannot be stored is reported to its waiter as an error, so the command it records does not
//! run: audit fails closed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use crate::audit::event::AuditEvent;
use crate::audit::jsonl::JsonlSink;
use crate::config::Durability;
use crate::error::{Error, Result};
use crate::store::Store;

/// Jobs the channel holds before senders wait.
pub const QUEUE_CAPACITY: usize = 8192;
/// Events the writer gathers into one commit, at most (one large `record_all` may exceed it).
pub const MAX_BATCH: usize = 1024;

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditStats {
    /// Events committed to the store.
    pub events: u64,
    /// Commits (each holds one or more events).
    pub batches: u64,
    /// Commits that failed; every event in them was reported as not recorded.
    pub failed_batches: u64,
    /// Events in failed commits.
    pub failed_events: u64,
    /// Batches the JSON-lines file could not take.
    pub jsonl_failures: u64,
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

#[derive(Debug, Default)]
struct Counters {
    events: AtomicU64,
    batches: AtomicU64,
    failed_batches: AtomicU64,
    failed_events: AtomicU64,
    jsonl_failures: AtomicU64,
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
}

fn stopped() -> Error {
    Error::Audit("audit writer is stopped".to_string())
}

impl AuditLog {
    /// Start the writer thread appending to `store`, and to `jsonl` after each commit.
    pub fn start(
        store: Arc<dyn Store>,
        durability: Durability,
        jsonl: Option<PathBuf>,
    ) -> Result<AuditLog> {
        let sink = jsonl.as_deref().map(JsonlSink::open).transpose()?;
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let counters = Arc::new(Counters::default());
        let writer = Writer {
            store,
            fsync: durability == Durability::Fsync,
            sink,
            counters: counters.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("audit-writer".to_string())
            .spawn(move || writer.run(rx))?;
        Ok(AuditLog {
            inner: Arc::new(Shared {
                tx,
                counters,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Append and wait until committed (and fsynced in Fsync mode). An Err means the event is
    /// NOT recorded and the caller must not run the command (fail closed).
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

    /// Queue without waiting for the commit (order is kept). Waits only for channel capacity.
    pub async fn record_later(&self, ev: AuditEvent) -> Result<()> {
        self.send(Job::One(ev, None)).await
    }

    /// Flush everything queued and stop the writer thread. Later records fail.
    pub async fn shutdown(&self) {
        let (ack, acked) = oneshot::channel();
        if self.inner.tx.send(Job::Shutdown(ack)).await.is_ok() {
            let _ = acked.await;
        }
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

    /// Counters for metrics: events written, batches, failures.
    pub fn stats(&self) -> AuditStats {
        let c = &self.inner.counters;
        AuditStats {
            events: c.events.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            failed_batches: c.failed_batches.load(Ordering::Relaxed),
            failed_events: c.failed_events.load(Ordering::Relaxed),
            jsonl_failures: c.jsonl_failures.load(Ordering::Relaxed),
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
        // The writer went away without answering: the event may not be stored.
        Err(_) => Err(stopped()),
    }
}

/// State owned by the writer thread.
struct Writer {
    store: Arc<dyn Store>,
    fsync: bool,
    sink: Option<JsonlSink>,
    counters: Arc<Counters>,
}

/// Events of one commit and who waits for them.
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
                }
                if batch.events.len() < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            self.commit(batch);
        }
        for ack in acks {
            let _ = ack.send(());
        }
    }

    fn commit(&mut self, batch: Batch) {
        let Batch {
            mut events,
            waiters,
            unwaited,
        } = batch;
        let n = events.len() as u64;
        if n == 0 {
            return;
        }
        let appended = catch_unwind(AssertUnwindSafe(|| {
            self.store.append_events(&mut events, self.fsync)
        }))
        .unwrap_or_else(|_| Err(Error::Audit("store failed while appending".to_string())));
        let c = &self.counters;
        match appended {
            Ok(()) => {
                c.events.fetch_add(n, Ordering::Relaxed);
                c.batches.fetch_add(1, Ordering::Relaxed);
                for (last, reply) in waiters {
                    let seq = events.get(last).map_or(0, |e| e.seq);
                    let _ = reply.send(Ok(seq));
                }
                // After the waiters: the copy in the file must not delay the commands.
                if let Some(sink) = &mut self.sink
                    && let Err(e) = sink.write_batch(&events)
                {
                    c.jsonl_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        path = %sink.path().display(),
                        events = n,
                        error = %e,
                        "audit events committed but not written to the JSON-lines file"
                    );
                }
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
    }
}

#[cfg(test)]
mod tests;
