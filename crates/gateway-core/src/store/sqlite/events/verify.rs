//! Walking the stored chain: every block in order, every event's hash recomputed.

use std::collections::BTreeSet;

use rusqlite::Connection;

use super::{Layout, block, block_from_row, key, keys_of, segments, to_i64};
use crate::error::Result;
use crate::event::AuditEvent;
use crate::event::chain::{GENESIS_HASH, canonical_body, chain_hash};
use crate::event::line::splice_body;
use crate::store::{ChainReport, Probed};

/// Walk every block in order, recompute each event's hash, and stop at the first problem.
pub(in crate::store::sqlite) fn verify(
    conn: &Connection,
    probes: &BTreeSet<u64>,
    layout: Layout<'_>,
) -> Result<(ChainReport, Probed)> {
    let mut probed = Probed::default();
    let report = verify_into(conn, probes, &mut probed, layout)?;
    Ok((report, probed))
}

fn verify_into(
    conn: &Connection,
    probes: &BTreeSet<u64>,
    probed: &mut Probed,
    layout: Layout<'_>,
) -> Result<ChainReport> {
    let mut stmt = conn.prepare(&format!(
        "{} ORDER BY b.first_seq",
        segments::block_select(layout.positional)
    ))?;
    let mut keys_stmt = conn.prepare("SELECT key FROM event_keys WHERE first_seq = ?1")?;
    let mut rows = stmt.query([])?;
    let mut checked = 0u64;
    let mut expect_seq: u64 = 1;
    let mut expect_prev = GENESIS_HASH.to_string();
    let problem = |checked: u64, seq: u64, msg: String| ChainReport {
        events: checked,
        problem: Some((seq, msg)),
    };
    while let Some(row) = rows.next()? {
        let raw = block_from_row(row)?;
        let (first, last) = (raw.bounds.0, raw.bounds.1);
        let b = match block(raw, layout)? {
            Ok(b) => b,
            Err(why) => {
                let at = expect_seq;
                return Ok(problem(
                    checked,
                    at,
                    format!("events {first} to {last} cannot be read: {why}"),
                ));
            }
        };
        let lines: Vec<&str> = b.lines.lines().collect();
        let mut events = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            let Ok(ev) = serde_json::from_str::<AuditEvent>(line) else {
                let at = expect_seq;
                return Ok(problem(
                    checked,
                    at,
                    format!("event {at}: stored content is not an event (edited)"),
                ));
            };
            let seq = ev.seq;
            if seq != expect_seq {
                let msg = if seq == expect_seq + 1 {
                    format!("event {expect_seq} is missing (deleted?)")
                } else if seq > expect_seq {
                    format!("events {expect_seq} to {} are missing (deleted?)", seq - 1)
                } else {
                    format!("event {seq}: sequence number out of place (edited)")
                };
                return Ok(problem(checked, expect_seq, msg));
            }
            if ev.prev_hash != expect_prev {
                let msg = if seq == 1 {
                    "event 1: does not start the chain (events before it deleted or replaced?)"
                        .to_string()
                } else {
                    format!(
                        "event {seq}: does not follow event {} (events reordered, replaced or deleted)",
                        seq - 1
                    )
                };
                return Ok(problem(checked, seq, msg));
            }
            let body = splice_body(line).map_or_else(|| canonical_body(&ev), Ok)?;
            let computed = chain_hash(&ev.prev_hash, seq, &body);
            if computed != ev.hash {
                // If the next event links to the recomputed hash, the content is intact and
                // only the stored hash was changed.
                let next_prev = lines
                    .get(i + 1)
                    .and_then(|l| serde_json::from_str::<AuditEvent>(l).ok())
                    .map(|n| n.prev_hash);
                let msg = if next_prev.as_deref() == Some(computed.as_str()) {
                    format!("event {seq}: stored hash was altered (edited)")
                } else {
                    format!("event {seq}: content does not match its hash (edited)")
                };
                return Ok(problem(checked, seq, msg));
            }
            checked += 1;
            expect_seq += 1;
            expect_prev = ev.hash.clone();
            if probes.contains(&seq) {
                probed.hashes.insert(seq, ev.hash.clone());
            }
            probed.head = Some((seq, ev.hash.clone()));
            events.push(ev);
        }
        // The hashes cover the lines, not the block's bounds or its keys: an edit there would
        // hide events from queries.
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(problem(
                checked,
                b.first_seq,
                format!(
                    "audit block at event {}: holds no events (edited)",
                    b.first_seq
                ),
            ));
        };
        let bounds_ok = first.seq == b.first_seq
            && last.seq == b.last_seq
            && first.time_us == b.first_us
            && last.time_us == b.last_us
            && last.hash == b.last_hash;
        let mut expected = BTreeSet::new();
        for ev in &events {
            keys_of(ev, &mut expected);
        }
        let expected: BTreeSet<String> = expected.iter().map(|(t, v)| key(*t, v)).collect();
        let stored: BTreeSet<String> = keys_stmt
            .query_map([to_i64(b.first_seq)], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<_>>()?;
        if !bounds_ok || expected != stored {
            let what = if bounds_ok { "index keys" } else { "bounds" };
            return Ok(problem(
                checked,
                b.first_seq,
                format!(
                    "events {} to {}: the block's {what} do not match its content (edited)",
                    first.seq, last.seq
                ),
            ));
        }
    }
    Ok(ChainReport {
        events: checked,
        problem: None,
    })
}
