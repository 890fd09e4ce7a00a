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

    /// Append the lines of events from `first` on with one write; where they lie.
    pub(super) fn append(&mut self, first: u64, lines: &[u8]) -> Result<Written> {
        self.journal.append(first, lines)
    }
}
