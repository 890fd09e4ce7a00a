//! `audit verify`: the whole chain — the store, then the journal segments beyond it — checked
//! link by link and against the signed anchors, without writing anything.
//!
//! The store is walked first, then the segments beyond its head: segments are never deleted
//! (they are the archive the store's blocks point into), so whatever a running gateway
//! indexes meanwhile is still in its segment, and the two together have no false gap.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::audit::anchor::{Anchor, key_id};
use crate::audit::chain::GENESIS_HASH;
use crate::audit::journal::{list_segments, parse_line, written};
use crate::error::Result;
use crate::store::{ChainReport, Probed};
use crate::timefmt::rfc3339_micros;

/// What `audit verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Events whose links and hashes check out.
    pub events: u64,
    /// Of those, in the store.
    pub stored: u64,
    /// Of those, only in the journal so far.
    pub journaled: u64,
    /// Seq and hash of the last event checked.
    pub head: Option<(u64, String)>,
    /// Anchors compared with the chain.
    pub anchors: usize,
    /// The newest anchor, if any.
    pub last_anchor: Option<Anchor>,
    /// The first bad position and what is wrong there.
    pub problem: Option<(u64, String)>,
    /// A torn last journal line (a write cut short by a crash), left out of the chain.
    pub torn: Option<String>,
}

/// Journal events beyond the store, checked against their own hashes.
struct JournalEvent {
    seq: u64,
    prev: String,
    hash: String,
    segment: PathBuf,
}

/// Verify the chain in the store (walked by `walk`, which reports the hashes at the
/// positions it is given) and the journal in `journal_dir`, then compare every anchor with
/// it. `trusted` are the raw public keys anchors must be signed with.
pub fn verify(
    walk: impl FnOnce(&BTreeSet<u64>) -> Result<(ChainReport, Probed)>,
    journal_dir: &Path,
    anchors: &[Anchor],
    trusted: &[Vec<u8>],
) -> Result<Verified> {
    let probes: BTreeSet<u64> = anchors.iter().map(|a| a.seq).collect();
    let (report, probed) = walk(&probes)?;
    let stored_head = probed.head.as_ref().map_or(0, |(seq, _)| *seq);
    let (journal, torn) = read_journal(journal_dir, stored_head)?;
    let mut out = Verified {
        events: report.events,
        stored: report.events,
        journaled: 0,
        head: probed.head.clone(),
        anchors: 0,
        last_anchor: anchors.iter().max_by_key(|a| (a.seq, a.time_us)).cloned(),
        problem: None,
        torn: None,
    };
    if let Some(problem) = report.problem {
        out.problem = Some(problem);
        return Ok(out);
    }
    let mut hashes = probed.hashes;
    let (mut seq, mut prev) = probed.head.clone().unwrap_or((0, GENESIS_HASH.to_string()));
    for ev in journal {
        let JournalEvent {
            seq: at,
            prev: ev_prev,
            hash,
            segment,
        } = match ev {
            Ok(ev) => ev,
            Err((at, what)) => {
                // `at` is the event before the bad line.
                if at >= seq {
                    out.problem = Some((seq + 1, what));
                    return Ok(out);
                }
                continue;
            }
        };
        if at < seq {
            // Stored already: its block was checked through the store.
            continue;
        }
        if at == seq {
            if at > 0 && hash != prev {
                out.problem = Some((
                    at,
                    format!(
                        "event {at} differs between the store and the journal ({})",
                        segment.display()
                    ),
                ));
                return Ok(out);
            }
            continue;
        }
        if at != seq + 1 {
            let missing = if at == seq + 2 {
                format!("event {} is missing", seq + 1)
            } else {
                format!("events {} to {} are missing", seq + 1, at - 1)
            };
            out.problem = Some((
                seq + 1,
                format!(
                    "{missing} (a journal segment before {} was removed?)",
                    segment.display()
                ),
            ));
            return Ok(out);
        }
        if ev_prev != prev {
            out.problem = Some((
                at,
                format!(
                    "event {at} in {} does not follow event {seq} (events replaced or reordered)",
                    segment.display()
                ),
            ));
            return Ok(out);
        }
        if probes.contains(&at) {
            hashes.insert(at, hash.clone());
        }
        (seq, prev) = (at, hash);
        out.events += 1;
        out.journaled += 1;
    }
    if out.journaled > 0 {
        out.head = Some((seq, prev));
    }
    out.torn = torn;
    out.problem = check_anchors(anchors, trusted, seq, &hashes);
    out.anchors = anchors.len();
    Ok(out)
}

/// The first anchor problem, by chain position: a forged or foreign anchor, a chain that
/// ends before an anchor (its tail was cut), or an anchored event whose hash changed.
fn check_anchors(
    anchors: &[Anchor],
    trusted: &[Vec<u8>],
    head: u64,
    hashes: &BTreeMap<u64, String>,
) -> Option<(u64, String)> {
    let trusted_ids: Vec<String> = trusted.iter().map(|k| key_id(k)).collect();
    let mut problems: Vec<(u64, String)> = Vec::new();
    for a in anchors {
        let when = rfc3339_micros(a.time_us);
        let signed = trusted
            .iter()
            .zip(&trusted_ids)
            .any(|(k, id)| *id == a.key && a.signed_by(k));
        if !signed {
            problems.push((
                a.seq,
                format!(
                    "the anchor for event {} signed at {when} does not verify with the anchor key \
                     (key {}; trusted: {}): forged, or another gateway's",
                    a.seq,
                    a.key,
                    trusted_ids.join(", ")
                ),
            ));
        } else if a.seq > head {
            problems.push((
                head + 1,
                format!(
                    "the chain ends at event {head}, but the anchor signed at {when} covers {} \
                     events: events {} to {} were cut from the tail",
                    a.seq,
                    head + 1,
                    a.seq
                ),
            ));
        } else if hashes.get(&a.seq) != Some(&a.hash) {
            problems.push((
                a.seq,
                format!(
                    "event {} does not match the anchor signed at {when}: the chain up to it \
                     was rewritten",
                    a.seq
                ),
            ));
        }
    }
    problems.into_iter().min_by_key(|(seq, _)| *seq)
}

type Read = std::result::Result<JournalEvent, (u64, String)>;

/// Every complete line of every segment that holds events after `after`, in order, each
/// checked against its own hash. A torn last line (a write cut short by a crash, never
/// acknowledged) is left out and described.
fn read_journal(dir: &Path, after: u64) -> Result<(Vec<Read>, Option<String>)> {
    let mut out = Vec::new();
    let mut torn = None;
    if !dir.is_dir() {
        return Ok((out, torn));
    }
    let segments = list_segments(dir)?;
    for (i, (first, path)) in segments.iter().enumerate() {
        if segments
            .get(i + 1)
            .is_some_and(|(next, _)| *next <= after + 1)
        {
            continue;
        }
        let first = *first;
        let data = std::fs::read(path)?;
        let mut at = first.saturating_sub(1);
        // A segment still open (or left open by a crash) is zero-filled after its last line.
        for line in written(&data).split_inclusive(|b| *b == b'\n') {
            let Some(line) = line.strip_suffix(b"\n") else {
                torn = Some(format!(
                    "{}: a torn last line (a write cut short) is not part of the chain",
                    path.display()
                ));
                break;
            };
            match parse_line(line) {
                Ok(ev) => {
                    at = ev.seq;
                    out.push(Ok(JournalEvent {
                        seq: ev.seq,
                        prev: ev.prev_hash,
                        hash: ev.hash,
                        segment: path.clone(),
                    }));
                }
                Err(e) => {
                    out.push(Err((
                        at,
                        format!("after event {at} in {}: {e} (edited)", path.display()),
                    )));
                }
            }
        }
    }
    Ok((out, torn))
}

#[cfg(test)]
mod tests;
