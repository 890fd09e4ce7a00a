//! Appends every audit event as one JSON line to a file.
//!
//! The store is the source of truth; this file is a copy for log shippers. Each batch is
//! built in one buffer and written with one `write` to a file opened for appending, so lines
//! from one batch are never interleaved with anything else.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::audit::event::AuditEvent;
use crate::error::{Error, Result};

/// Larger buffers than this are released after use rather than kept for the next batch.
const KEEP_BUFFER: usize = 4 << 20;

/// A JSON-lines file receiving committed events (with their `seq` and `hash`).
#[derive(Debug)]
pub struct JsonlSink {
    file: File,
    path: PathBuf,
    buf: Vec<u8>,
    /// A previous write failed part-way; start the next one on a fresh line.
    torn: bool,
}

impl JsonlSink {
    /// Open `path` for appending, creating it and its directory if needed.
    pub fn open(path: &Path) -> Result<JsonlSink> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(JsonlSink {
            file,
            path: path.to_path_buf(),
            buf: Vec::new(),
            torn: false,
        })
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append lines already formatted (each ending in a newline) with one write.
    pub fn write_lines(&mut self, lines: &[u8]) -> Result<()> {
        let written = if self.torn {
            self.file
                .write_all(b"\n")
                .and_then(|()| self.file.write_all(lines))
        } else {
            self.file.write_all(lines)
        };
        self.torn = written.is_err();
        Ok(written?)
    }

    /// Append `events`, one line each, in one write.
    pub fn write_batch(&mut self, events: &[AuditEvent]) -> Result<()> {
        self.buf.clear();
        if self.torn {
            self.buf.push(b'\n');
        }
        for ev in events {
            serde_json::to_writer(&mut self.buf, ev)
                .map_err(|e| Error::Audit(format!("cannot serialise event {}: {e}", ev.seq)))?;
            self.buf.push(b'\n');
        }
        let written = self.file.write_all(&self.buf);
        self.torn = written.is_err();
        if self.buf.capacity() > KEEP_BUFFER {
            self.buf = Vec::new();
        }
        Ok(written?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::EventKind;
    use crate::store::sqlite::tests::TempDir;

    #[test]
    fn appends_one_line_per_event() {
        let dir = TempDir::new("jsonl");
        let path = dir.path().join("logs/audit.jsonl");
        let mut ev = AuditEvent::new(EventKind::Command, "s1");
        ev.statement = Some("select 1;\nselect 2".to_string());
        ev.seq = 1;
        let mut sink = JsonlSink::open(&path).unwrap();
        sink.write_batch(&[ev.clone()]).unwrap();
        drop(sink);
        // Reopening appends rather than truncating.
        let mut sink = JsonlSink::open(&path).unwrap();
        ev.seq = 2;
        sink.write_batch(&[ev.clone()]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let back: AuditEvent = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(back, ev);
    }
}
