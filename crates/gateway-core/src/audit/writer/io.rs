//! The writing side of the writer: the journal and the hand-over to the indexer.

use std::fs::File;
use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use std::thread::JoinHandle;

use crate::audit::indexer::IndexMsg;
use crate::audit::journal::{JournalWriter, Written};
use crate::error::Result;

/// The writing side, behind its own lock.
#[derive(Debug)]
pub(super) struct Io {
    pub(super) journal: JournalWriter,
    /// Seq and hash of the last event written.
    pub(super) head: (u64, String),
    pub(super) index_tx: SyncSender<IndexMsg>,
    pub(super) indexer: Option<JoinHandle<()>>,
    /// Held while the writer runs: no other process recovers or appends meanwhile.
    pub(super) lock: Option<Arc<File>>,
    /// With a mapped journal: the segments holding the events up to `head` that may not be
    /// on disk yet (the last is the open one).
    pub(super) mapped_files: Vec<Arc<File>>,
}

impl Io {
    pub(super) fn join_indexer(&mut self) {
        if let Some(handle) = self.indexer.take()
            && handle.join().is_err()
        {
            tracing::error!("audit indexer thread ended abnormally");
        }
    }

    /// Hand over to the indexer, waiting while its queue is full (backpressure).
    pub(super) fn to_indexer(&self, msg: IndexMsg) {
        if self.index_tx.send(msg).is_err() {
            tracing::error!(
                "audit indexer is gone; events stay in the journal until the next start"
            );
        }
    }

    /// Sync what holds the events up to `head` to disk.
    pub(super) fn sync(&mut self) -> Result<()> {
        self.journal.sync()?;
        for f in &self.mapped_files {
            f.sync_data().map_err(|e| {
                crate::error::Error::Audit(format!("cannot sync the audit journal: {e}"))
            })?;
        }
        // Closed segments are on disk now; the open one is synced again next time.
        let keep = self.mapped_files.len().saturating_sub(1);
        self.mapped_files.drain(..keep);
        Ok(())
    }

    /// Append the lines of events from `first` on with one write; where they lie.
    pub(super) fn append(&mut self, first: u64, lines: &[u8]) -> Result<Written> {
        self.journal.append(first, lines)
    }
}
