//! Start-up recovery: index what the journal holds beyond the store.

use std::path::Path;

use crate::audit::chain::GENESIS_HASH;
use crate::audit::event::AuditEvent;
use crate::error::{Error, Result};
use crate::store::{SegmentAt, Store};

use super::list_segments;

/// Events per store transaction while recovering.
const RECOVER_BATCH: usize = 10_000;

/// The end of the chain: where the next event continues it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) seq: u64,
    pub(crate) hash: String,
}

/// What recovery did.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// Events copied from the journal into the store.
    pub(crate) stored: u64,
    /// The chain's last event, in the store now.
    pub(crate) head: Head,
}

/// Index every journal event past the store's last one, checking that each continues the
/// chain; segments wholly before it are not read again. The caller holds the journal's lock. A torn last line (a write cut short by a crash, never
/// acknowledged) is cut off the last segment; anything else unreadable is an error, so the
/// gap is seen rather than silently skipped.
pub(crate) fn recover(store: &dyn Store, dir: &Path) -> Result<Recovered> {
    let (seq, hash) = store
        .last_event()?
        .unwrap_or_else(|| (0, GENESIS_HASH.to_string()));
    let stored_head = Head { seq, hash };
    let mut head = stored_head.clone();
    let mut stored = 0u64;
    let segments = list_segments(dir)?;
    let last_index = segments.len().saturating_sub(1);
    for (i, (_, path)) in segments.iter().enumerate() {
        // Every event of this segment is before the next one's first: indexed already.
        if segments
            .get(i + 1)
            .is_some_and(|(next, _)| *next <= stored_head.seq + 1)
        {
            continue;
        }
        let bad = |what: String| Error::Audit(format!("audit journal {}: {what}", path.display()));
        let raw = std::fs::read(path)?;
        // A segment a crash left open is zero-filled after its last line.
        let data = super::written(&raw);
        // Events to index from this segment, their lines, and where the first line starts.
        let mut pending: Vec<AuditEvent> = Vec::new();
        let mut lines: Vec<&str> = Vec::new();
        let mut run_at = 0u64;
        let mut offset = 0u64;
        let complete = data.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        if complete < data.len() {
            if i != last_index {
                return Err(bad("ends in an incomplete line".to_string()));
            }
            tracing::warn!(
                path = %path.display(),
                bytes = data.len() - complete,
                "cutting an incomplete audit journal line (a write cut short, never acknowledged)"
            );
        }
        if complete < raw.len() {
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)?
                .set_len(complete as u64)?;
        }
        for (n, line) in data[..complete].split(|&b| b == b'\n').enumerate() {
            let line_at = offset;
            offset += line.len() as u64 + 1;
            if line.is_empty() {
                continue;
            }
            let ev = super::parse_line(line).map_err(|e| bad(format!("line {}: {e}", n + 1)))?;
            let line =
                std::str::from_utf8(line).map_err(|e| bad(format!("line {}: {e}", n + 1)))?;
            if ev.seq <= stored_head.seq {
                if ev.seq == stored_head.seq && ev.hash != stored_head.hash {
                    return Err(bad(format!(
                        "event {} differs from the stored one (was the store replaced?)",
                        ev.seq
                    )));
                }
                continue;
            }
            if ev.seq != head.seq + 1 || ev.prev_hash != head.hash {
                return Err(bad(format!(
                    "event {} does not follow event {} (events missing from the journal or the store)",
                    ev.seq, head.seq
                )));
            }
            head = Head {
                seq: ev.seq,
                hash: ev.hash.clone(),
            };
            if pending.is_empty() {
                run_at = line_at;
            }
            pending.push(ev);
            lines.push(line);
            if pending.len() >= RECOVER_BATCH {
                let at = SegmentAt {
                    path,
                    offset: run_at,
                };
                let events: Vec<&AuditEvent> = pending.iter().collect();
                store.insert_chained(&events, &lines, Some(at))?;
                stored += pending.len() as u64;
                pending.clear();
                lines.clear();
            }
        }
        if !pending.is_empty() {
            let at = SegmentAt {
                path,
                offset: run_at,
            };
            let events: Vec<&AuditEvent> = pending.iter().collect();
            store.insert_chained(&events, &lines, Some(at))?;
            stored += pending.len() as u64;
        }
    }
    if stored > 0 {
        tracing::info!(
            events = stored,
            "stored audit events recovered from the journal"
        );
    }
    Ok(Recovered { stored, head })
}
