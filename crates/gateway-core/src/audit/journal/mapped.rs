//! The journal written through a memory map, for `durability = "process"`.
//!
//! A segment is created at its full size with its blocks reserved, and mapped; staging an
//! event copies its line into the map under the chain's lock. That copy is the durability
//! point: the bytes are in the page cache, as after a `write`, so a gateway killed at any
//! instant loses nothing it acknowledged, and a command's event is on record before it is
//! forwarded without a system call or a second lock per command. A segment is cut to the
//! bytes written when it is closed; one left by a crash is zero-filled after its last line,
//! and readers stop at the first NUL (recovery cuts it).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mapped_file::MappedFile;

use super::{Written, segment_path};
use crate::error::{Error, Result};

/// Segments of the journal, appended to through a map.
#[derive(Debug)]
pub(crate) struct MappedJournal {
    dir: PathBuf,
    segment_bytes: u64,
    current: Option<Current>,
    /// Segments closed since the journal was last synced.
    closed: Vec<Arc<File>>,
}

#[derive(Debug)]
struct Current {
    map: MappedFile,
    path: Arc<Path>,
    /// Bytes of whole lines written.
    len: usize,
}

impl MappedJournal {
    pub(crate) fn new(dir: &Path, segment_bytes: u64) -> MappedJournal {
        MappedJournal {
            dir: dir.to_path_buf(),
            segment_bytes: segment_bytes.max(1),
            current: None,
            closed: Vec::new(),
        }
    }

    /// Append `chunk` (the whole lines of events from `first_seq` on) to the current
    /// segment, or to a new one named after `first_seq` when it does not fit. All of it is
    /// written or, on error, none of it.
    pub(crate) fn append(&mut self, first_seq: u64, chunk: &[u8]) -> Result<Written> {
        let fits = self
            .current
            .as_ref()
            .is_some_and(|c| c.len + chunk.len() <= c.map.capacity());
        if !fits {
            self.close();
            self.current = Some(self.open(first_seq, chunk.len())?);
        }
        let Some(cur) = self.current.as_mut() else {
            return Err(Error::Audit("no journal segment open".to_string()));
        };
        cur.map.write_at(cur.len, chunk).map_err(|e| {
            Error::Audit(format!(
                "cannot write the audit journal {}: {e}",
                cur.path.display()
            ))
        })?;
        let at = Written {
            path: cur.path.clone(),
            offset: cur.len as u64,
        };
        cur.len += chunk.len();
        Ok(at)
    }

    /// The files holding everything appended so far that may not be on disk yet: sync
    /// them (`sync_data` writes back pages written through the map) before vouching for
    /// their content.
    pub(crate) fn unsynced(&mut self) -> Vec<Arc<File>> {
        let mut files = std::mem::take(&mut self.closed);
        if let Some(cur) = &self.current {
            files.push(cur.map.file().clone());
        }
        files
    }

    /// Close the current segment, cut to the lines written.
    pub(crate) fn close(&mut self) {
        if let Some(cur) = self.current.take() {
            self.closed.push(cur.map.file().clone());
            if let Err(e) = cur.map.finish(cur.len as u64) {
                // Readers stop at the zeros after the last line, so nothing is lost.
                tracing::warn!(path = %cur.path.display(), error = %e, "cannot cut a closed audit journal segment to its length");
            }
        }
    }

    fn open(&self, first_seq: u64, need: usize) -> Result<Current> {
        let path = segment_path(&self.dir, first_seq);
        let map = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            // Its events are not journaled yet (the name is that of the first one), so whatever
            // the name holds is not part of the chain: an attempt that failed part way left it.
            .truncate(true)
            .open(&path)
            .and_then(|file| MappedFile::create(file, self.segment_bytes.max(need as u64)))
            .map_err(|e| {
                Error::Audit(format!(
                    "cannot open the audit journal {}: {e}",
                    path.display()
                ))
            })?;
        Ok(Current {
            map,
            path: path.into(),
            len: 0,
        })
    }
}

impl Drop for MappedJournal {
    fn drop(&mut self) {
        self.close();
    }
}

/// The written part of a segment's bytes: everything before the first NUL. A segment left
/// open by a crash is zero-filled after its last line, and a copy the crash cut short may
/// have stored its end before its start (memcpy does not go front to back), leaving zeros
/// inside it; journal lines never hold a NUL, and nothing past the first one was
/// acknowledged (an event is durable only once its whole copy is done).
pub(crate) fn written(data: &[u8]) -> &[u8] {
    &data[..memchr::memchr(0, data).unwrap_or(data.len())]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::tests::TempDir;

    #[test]
    fn appends_rotate_when_a_chunk_does_not_fit_and_closed_segments_are_cut() {
        let tmp = TempDir::new("journal-mapped");
        let dir = tmp.path();
        let mut j = MappedJournal::new(dir, 16);
        let a = j.append(1, b"{\"a\":1}\n").unwrap();
        let b = j.append(2, b"{\"b\":2}\n").unwrap();
        assert_eq!((a.offset, b.offset), (0, 8));
        assert_eq!(a.path, b.path);
        // Does not fit in what is left: a new segment, named after its first event.
        let c = j.append(3, b"{\"c\":3}\n").unwrap();
        assert_eq!(c.offset, 0);
        assert_eq!(&*c.path, segment_path(dir, 3));
        assert_eq!(std::fs::read(&a.path).unwrap(), b"{\"a\":1}\n{\"b\":2}\n");
        // A chunk larger than a segment gets a segment of its own size.
        let big = vec![b'x'; 40];
        let d = j.append(4, &big).unwrap();
        assert_eq!(d.offset, 0);
        // The open segment is zero-filled after its last line until it is closed.
        let live = std::fs::read(segment_path(dir, 4)).unwrap();
        assert_eq!(written(&live), &big[..]);
        assert_eq!(j.unsynced().len(), 3);
        drop(j);
        assert_eq!(std::fs::read(segment_path(dir, 4)).unwrap(), big);
        assert_eq!(std::fs::read(segment_path(dir, 3)).unwrap(), b"{\"c\":3}\n");
    }

    #[test]
    fn written_stops_at_the_zero_fill() {
        assert_eq!(written(b"ab\n\0\0\0"), b"ab\n");
        assert_eq!(written(b"ab\nc\0\0"), b"ab\nc");
        assert_eq!(written(b"\0\0"), b"");
        assert_eq!(written(b"ab\n"), b"ab\n");
        // A copy cut short with its end stored before its start.
        assert_eq!(written(b"ab\n\0\0d\n\0\0"), b"ab\n");
    }
}
