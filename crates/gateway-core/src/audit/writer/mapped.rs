//! The writer with `durability = "process"`: staging copies each line into the journal's
//! map (see [`crate::audit::journal::MappedJournal`]), which makes it durable at once, so a
//! session neither writes nor waits for a write before forwarding its command. The flusher
//! thread hands what is journaled to the indexer every few milliseconds.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{AnchorState, Chain, FLUSH_EVERY, MAX_REUSE, MAX_STAGED, Shared};
use crate::audit::indexer::IndexMsg;
use crate::audit::journal::Written;
use crate::error::{Error, Result};

/// Mapped events whose lines lie one after the other in one segment, from the event at
/// `event` (and the line byte `byte`) of the staged ones on.
#[derive(Debug)]
pub(super) struct Run {
    event: usize,
    byte: usize,
    at: Written,
}

impl Chain {
    /// Undo a stage: events from `count` on (lines from `mark`) go, the head returns to `seq`
    /// and the hash the first of them followed.
    pub(super) fn unstage(&mut self, mark: usize, count: usize, seq: u64) {
        if let Some(first) = self.events.get(count) {
            self.prev = first.prev_hash.clone();
        }
        self.lines.truncate(mark);
        self.events.truncate(count);
        self.seq = seq;
    }
}

impl Shared {
    /// Copy the staged lines not yet in the mapped journal into it, making them durable. An
    /// Err means they are not written: a strict stage is undone by the caller; events nobody
    /// waits for stay staged for the flusher to retry, up to [`MAX_STAGED`]. Does nothing
    /// when the journal is written with `write`.
    pub(super) fn map_staged(&self, chain: &mut Chain, strict: bool) -> Result<()> {
        let Some(journal) = chain.mapped.as_mut() else {
            return Ok(());
        };
        let Some(first) = chain.events.get(chain.on_map).map(|e| e.seq) else {
            return Ok(());
        };
        let chunk = &chain.lines[chain.on_map_bytes..];
        match journal.append(first, chunk) {
            Ok(at) => {
                let continues = chain.runs.last().is_some_and(|r| {
                    r.at.path == at.path
                        && r.at.offset + (chain.on_map_bytes - r.byte) as u64 == at.offset
                });
                if !continues {
                    chain.runs.push(Run {
                        event: chain.on_map,
                        byte: chain.on_map_bytes,
                        at,
                    });
                }
                let c = &self.counters;
                c.events.fetch_add(
                    (chain.events.len() - chain.on_map) as u64,
                    Ordering::Relaxed,
                );
                c.batches.fetch_add(1, Ordering::Relaxed);
                c.journal_seq.store(chain.seq, Ordering::Relaxed);
                chain.on_map = chain.events.len();
                chain.on_map_bytes = chain.lines.len();
                self.durable.store(chain.seq, Ordering::Release);
                if chain.failure.take().is_some() {
                    tracing::info!("the audit journal is writable again");
                }
                Ok(())
            }
            Err(e) => {
                let c = &self.counters;
                c.failed_batches.fetch_add(1, Ordering::Relaxed);
                c.failed_events.fetch_add(
                    (chain.events.len() - chain.on_map) as u64,
                    Ordering::Relaxed,
                );
                if chain.failure.is_none() {
                    tracing::error!(error = %e, "the audit journal cannot be written; no command runs until it can");
                }
                let why = format!("audit is unavailable: {e}");
                chain.failure = Some(why.clone());
                if strict || chain.events.len() - chain.on_map > MAX_STAGED {
                    Err(Error::Audit(why))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Retry what could not be mapped, then hand what is journaled to the indexer, a message
    /// per run, and note the new head (and, for anchoring, the files holding it).
    fn hand_over(&self, keep_files: bool) {
        let (mut events, mut lines, runs, files) = {
            let mut chain = self.chain();
            if chain.abandoned {
                return;
            }
            let _ = self.map_staged(&mut chain, false);
            let (n, bytes) = (chain.on_map, chain.on_map_bytes);
            if n == 0 {
                return;
            }
            let events = if n == chain.events.len() {
                std::mem::take(&mut chain.events)
            } else {
                chain.events.drain(..n).collect()
            };
            let lines = if bytes == chain.lines.len() {
                // The next batch is likely as large: one allocation instead of regrowing.
                let next = Vec::with_capacity(bytes.min(MAX_REUSE));
                std::mem::replace(&mut chain.lines, next)
            } else {
                chain.lines.drain(..bytes).collect()
            };
            chain.on_map = 0;
            chain.on_map_bytes = 0;
            let runs = std::mem::take(&mut chain.runs);
            // Kept only to be synced for an anchor; otherwise closed segments are let go.
            let mut files = chain
                .mapped
                .as_mut()
                .map(|j| j.unsynced())
                .unwrap_or_default();
            if !keep_files {
                files.clear();
            }
            (events, lines, runs, files)
        };
        let mut io = self.io();
        for f in files {
            if !io.mapped_files.iter().any(|g| Arc::ptr_eq(&f, g)) {
                io.mapped_files.push(f);
            }
        }
        if let Some(last) = events.last() {
            io.head = (last.seq, last.hash.clone());
        }
        // Split from the back, so each part is moved once.
        let mut parts = Vec::with_capacity(runs.len());
        for run in runs.into_iter().rev() {
            let ev = events.split_off(run.event.min(events.len()));
            let li = lines.split_off(run.byte.min(lines.len()));
            parts.push((ev, li, run.at));
        }
        let handed = parts.iter().map(|(e, _, _)| e.len()).sum::<usize>();
        for (events, lines, at) in parts.into_iter().rev() {
            io.to_indexer(IndexMsg::Batch {
                events,
                lines,
                at: Some(at),
            });
        }
        self.backlog.fetch_sub(
            handed.min(self.backlog.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
    }

    /// Backpressure: while more than [`MAX_STAGED`] journaled events wait for the indexer,
    /// wait for the hand-over in progress (it holds the I/O lock while the indexer's queue is
    /// full), as a session waited for the journal write with `write`.
    pub(super) fn wait_for_indexer(&self) {
        if self.backlog.load(Ordering::Relaxed) > MAX_STAGED {
            drop(self.io());
        }
    }
}

/// The flusher with a mapped journal: hand over every [`FLUSH_EVERY`] (sooner when woken),
/// sign the head at its interval, and at shutdown hand over the rest, sign the final head
/// and close the segment. False when the writer was abandoned (tests: a crash).
pub(super) fn hand_over_loop(shared: &Shared, anchored: &mut Option<AnchorState>) -> bool {
    loop {
        if let Some(a) = anchored.as_mut() {
            a.tick(shared, false);
        }
        let closed = {
            let chain = shared.chain();
            if chain.abandoned {
                return false;
            }
            chain.closed
        };
        shared.hand_over(anchored.is_some());
        if closed {
            if let Some(a) = anchored.as_mut() {
                a.tick(shared, true);
            }
            break;
        }
        let chain = shared.chain();
        if !chain.closed && !chain.abandoned {
            let _ = shared.wake.wait_timeout(chain, FLUSH_EVERY);
        }
    }
    let mut chain = shared.chain();
    if chain.on_map < chain.events.len() {
        tracing::error!(
            events = chain.events.len() - chain.on_map,
            "audit events staged at shutdown could not be written"
        );
    }
    // Nothing more is mapped: a later flush finds the journal closed.
    if let Some(mut j) = chain.mapped.take() {
        j.close();
    }
    true
}
