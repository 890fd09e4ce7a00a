//! The audit journal: append-only segment files in front of the store, like a database's
//! write-ahead log.
//!
//! The writer thread chains each batch (seq, prev_hash, hash), formats one JSON line per event
//! (the same line the JSON-lines sink writes) and appends the whole batch with one `write` to
//! the current segment, opened for appending. That write is the durability point: a page in
//! the page cache survives the process being killed, and in fsync mode the data is synced
//! before anyone is told the batch is recorded. The indexer then records in the store where
//! each block of events lies in its segment (keys and byte ranges, not a copy), so segments are
//! the archive and are never deleted by the gateway. At start-up, and before the command line
//! reads the store, [`recover_journal`] indexes whatever the journal holds beyond the store's
//! last event.
//!
//! Segments are `seg-<first seq, 20 digits>.jsonl` in `<state_dir>/audit-journal/`, next to a
//! `lock` file that the running gateway holds (an advisory exclusive lock) so that only one
//! process appends to, or recovers from, a journal at a time.

mod mapped;
mod recover;

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::store::Store;

pub(crate) use crate::event::line::{parse_line, push_line};
pub(crate) use mapped::{MappedJournal, written};
pub(crate) use recover::recover;

/// The journal's directory name under the state directory.
pub const JOURNAL_DIR: &str = "audit-journal";
/// A segment is closed and a new one started once it is this large.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// The advisory lock file in the journal directory.
const LOCK_FILE: &str = "lock";
/// How long a starting gateway waits for a command-line recovery to let go of the journal.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// The journal directory for a state directory.
pub fn journal_dir(state_dir: &Path) -> PathBuf {
    state_dir.join(JOURNAL_DIR)
}

/// Index every event the journal in `journal_dir` holds beyond the store's last one. Returns
/// how many events were indexed. Does nothing (and returns 0)
/// when there is no journal, or when a running gateway holds it: its indexer stores them.
/// The command line calls this before reading audit events, so that events recorded just
/// before a gateway died are visible.
pub fn recover_journal(store: &dyn Store, journal_dir: &Path) -> Result<u64> {
    if !journal_dir.is_dir() {
        return Ok(0);
    }
    let Some(_lock) = lock_dir(journal_dir, false)? else {
        return Ok(0);
    };
    Ok(recover(store, journal_dir)?.stored)
}

/// Take the journal's exclusive lock; `None` if another process (or another open journal in
/// this one) holds it, after waiting up to [`LOCK_WAIT`] when `wait` is set.
pub(crate) fn lock_dir(dir: &Path, wait: bool) -> Result<Option<File>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(Some(file)),
            Err(TryLockError::WouldBlock) if wait && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(e)) => return Err(e.into()),
        }
    }
}

/// The path of the segment whose first event is `first_seq`.
pub(crate) fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("seg-{first_seq:020}.jsonl"))
}

/// The segments in `dir`, ordered by their first seq.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut segs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let first = name
            .to_str()
            .and_then(|n| n.strip_prefix("seg-"))
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            segs.push((first, entry.path()));
        }
    }
    segs.sort_unstable();
    Ok(segs)
}

/// Where a batch was written: its segment and the offset of its first byte.
#[derive(Debug, Clone)]
pub(crate) struct Written {
    pub(crate) path: Arc<Path>,
    pub(crate) offset: u64,
}

/// The writer's side of the journal: the segment being appended to.
#[derive(Debug)]
pub(crate) struct JournalWriter {
    dir: PathBuf,
    segment_bytes: u64,
    fsync: bool,
    current: Option<Segment>,
}

#[derive(Debug)]
struct Segment {
    file: File,
    path: Arc<Path>,
    /// Bytes of whole batches in the file.
    len: u64,
    /// A failed write may have left part of a batch after `len`; cut it before appending.
    dirty: bool,
}

impl JournalWriter {
    /// A writer starting a new segment in `dir` at its first append.
    pub(crate) fn new(dir: &Path, segment_bytes: u64, fsync: bool) -> JournalWriter {
        JournalWriter {
            dir: dir.to_path_buf(),
            segment_bytes: segment_bytes.max(1),
            fsync,
            current: None,
        }
    }

    /// Append one batch (events `first_seq..=last_seq`, formatted in `buf`) with one write;
    /// synced in fsync mode. On error nothing of the batch remains in the journal (or the
    /// next append cuts it first, and fails if it cannot). Returns where the batch lies.
    pub(crate) fn append(&mut self, first_seq: u64, buf: &[u8]) -> Result<Written> {
        if let Some(seg) = self.current.as_mut().filter(|s| s.dirty) {
            seg.file.set_len(seg.len)?;
            seg.dirty = false;
        }
        if self
            .current
            .as_ref()
            .is_none_or(|s| s.len >= self.segment_bytes)
        {
            let next = self.open(first_seq)?;
            self.current = Some(next);
        }
        let Some(seg) = self.current.as_mut() else {
            return Err(Error::Audit("no journal segment open".to_string()));
        };
        let fsync = self.fsync;
        let written = seg
            .file
            .write_all(buf)
            .and_then(|()| if fsync { seg.file.sync_data() } else { Ok(()) });
        match written {
            Ok(()) => {
                let at = Written {
                    path: seg.path.clone(),
                    offset: seg.len,
                };
                seg.len += buf.len() as u64;
                Ok(at)
            }
            Err(e) => {
                // Never acknowledged, so it must not be recovered either.
                seg.dirty = seg.file.set_len(seg.len).is_err();
                Err(Error::Audit(format!(
                    "cannot write the audit journal {}: {e}",
                    seg.path.display()
                )))
            }
        }
    }

    /// Sync the current segment's data to disk (already done per write in fsync mode).
    pub(crate) fn sync(&mut self) -> Result<()> {
        match self.current.as_ref() {
            Some(seg) if !self.fsync => seg.file.sync_data().map_err(|e| {
                Error::Audit(format!(
                    "cannot sync the audit journal {}: {e}",
                    seg.path.display()
                ))
            }),
            _ => Ok(()),
        }
    }

    fn open(&self, first_seq: u64) -> Result<Segment> {
        let path = segment_path(&self.dir, first_seq);
        let opened = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|file| {
                if self.fsync {
                    // The new name must survive a power cut as well as its content.
                    File::open(&self.dir)?.sync_all()?;
                }
                let len = file.metadata()?.len();
                Ok((file, len))
            });
        let (file, len) = opened.map_err(|e| {
            Error::Audit(format!(
                "cannot open the audit journal {}: {e}",
                path.display()
            ))
        })?;
        Ok(Segment {
            file,
            path: path.into(),
            len,
            dirty: false,
        })
    }
}

#[cfg(test)]
mod tests;
