//! Audit events in SQLite, stored in blocks.
//!
//! A gateway records one or two events per statement, so the store takes them by the
//! thousand. A row per event, with its indexes, costs several microseconds of CPU each on a
//! machine that is also running the database and its clients. Instead, events are stored as
//! they are journaled: a block holds the journal lines of up to [`BLOCK_EVENTS`] consecutive
//! events (JSON, one per line, chain fields included), and a small key table says which blocks
//! hold which sessions, identities, connections, kinds and approvals. A query reads the
//! blocks its keys select and filters their events; `verify` walks the blocks in order,
//! recomputes every hash, and checks each block's keys and bounds against its content, since
//! the hashes do not cover them.

use std::collections::BTreeSet;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::error::{Error, Result};
use crate::event::chain::{GENESIS_HASH, canonical_body, chain_hash};
use crate::event::line::{push_line, splice_body};
use crate::event::{AuditEvent, EventFilter};
use crate::store::{ChainReport, Probed};

/// Events per block, at most.
pub(super) const BLOCK_EVENTS: usize = 1024;
/// Bytes of lines per block past which a block is closed.
pub(super) const BLOCK_BYTES: usize = 256 << 10;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS event_blocks (
    first_seq INTEGER PRIMARY KEY,
    last_seq  INTEGER NOT NULL,
    first_us  INTEGER NOT NULL,
    last_us   INTEGER NOT NULL,
    last_hash TEXT NOT NULL,
    lines     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS event_keys (
    key       TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    PRIMARY KEY (key, first_seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS event_keys_block ON event_keys(first_seq);
";

const LAST_BLOCK: &str =
    "SELECT last_seq, last_hash FROM event_blocks ORDER BY first_seq DESC LIMIT 1";
const INSERT_BLOCK: &str = "INSERT INTO event_blocks \
    (first_seq, last_seq, first_us, last_us, last_hash, lines) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const INSERT_KEY: &str = "INSERT OR IGNORE INTO event_keys (key, first_seq) VALUES (?1, ?2)";

/// The lookup keys of one event: what a filter can select blocks by.
fn keys_of(ev: &AuditEvent, out: &mut BTreeSet<(char, String)>) {
    let mut add = |tag: char, v: &str| {
        // Most events of a block repeat the same few keys: look before allocating.
        if !v.is_empty() && !out.iter().any(|(t, k)| *t == tag && k == v) {
            out.insert((tag, v.to_string()));
        }
    };
    add('s', &ev.session);
    add('k', ev.kind.as_str());
    if let Some(id) = &ev.identity {
        add('p', &id.principal);
        add('u', &id.subject);
    }
    if let Some(c) = &ev.connection {
        add('c', c);
    }
    if let Some(a) = &ev.approval {
        add('a', a);
    }
}

fn key(tag: char, value: &str) -> String {
    format!("{tag}:{value}")
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> Result<u64> {
    u64::try_from(n).map_err(|_| Error::Store(format!("invalid event sequence number {n}")))
}

/// The store's last event, read inside `tx`.
pub(super) fn head(conn: &Connection) -> Result<(u64, String)> {
    let last = conn
        .query_row(LAST_BLOCK, [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })
        .optional()?;
    match last {
        Some((seq, hash)) => Ok((to_u64(seq)?, hash)),
        None => Ok((0, GENESIS_HASH.to_string())),
    }
}

/// The journal lines in `lines`, each without its newline; an error unless there is exactly
/// one per event.
fn split_lines(lines: &[u8], events: usize) -> Result<Vec<&str>> {
    let text = std::str::from_utf8(lines)
        .map_err(|_| Error::Store("audit event lines are not UTF-8".to_string()))?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let split: Vec<&str> = if text.is_empty() {
        Vec::new()
    } else {
        text.split('\n').collect()
    };
    if split.len() != events {
        return Err(Error::Store(format!(
            "{} audit events came with {} lines",
            events,
            split.len()
        )));
    }
    Ok(split)
}

/// Insert chained events (with their lines) that continue the chain at `head`, in blocks.
/// Events at or before the head are skipped; the one at the head must have its hash. With
/// `check` unset the events are taken as they are (a migration copies what it finds, and
/// `verify` reports any damage).
pub(super) fn insert(
    tx: &Transaction<'_>,
    head: (u64, &str),
    events: &[AuditEvent],
    lines: &[u8],
    check: bool,
) -> Result<()> {
    let lines = split_lines(lines, events.len())?;
    let (last_seq, last_hash) = head;
    let mut prev: (u64, &str) = (last_seq, last_hash);
    let mut start = None;
    for (i, ev) in events.iter().enumerate() {
        if ev.seq < last_seq || (!check && ev.seq == last_seq) {
            continue;
        }
        if !check {
            start.get_or_insert(i);
            continue;
        }
        if ev.seq == last_seq {
            if ev.hash != last_hash {
                return Err(Error::Store(format!(
                    "event {}: already stored with a different hash",
                    ev.seq
                )));
            }
            continue;
        }
        if ev.seq != prev.0 + 1 || ev.prev_hash != prev.1 {
            return Err(Error::Store(format!(
                "event {} does not continue the stored chain at event {}",
                ev.seq, prev.0
            )));
        }
        start.get_or_insert(i);
        prev = (ev.seq, &ev.hash);
    }
    let Some(start) = start else {
        return Ok(());
    };
    let mut insert_block = tx.prepare(INSERT_BLOCK)?;
    let mut insert_key = tx.prepare(INSERT_KEY)?;
    let mut text = String::new();
    let mut keys = BTreeSet::new();
    let mut from = start;
    for i in start..events.len() {
        text.push_str(lines[i]);
        text.push('\n');
        keys_of(&events[i], &mut keys);
        let full = i + 1 - from >= BLOCK_EVENTS || text.len() >= BLOCK_BYTES;
        if full || i + 1 == events.len() {
            let (first, last) = (&events[from], &events[i]);
            let first_seq = to_i64(first.seq);
            insert_block.execute(params![
                first_seq,
                to_i64(last.seq),
                first.time_us,
                last.time_us,
                last.hash,
                text
            ])?;
            for (tag, value) in &keys {
                insert_key.execute(params![key(*tag, value), first_seq])?;
            }
            text.clear();
            keys.clear();
            from = i + 1;
        }
    }
    Ok(())
}

/// Chain `events` after the store's head, in `tx`; sets their `seq`, `prev_hash` and `hash`
/// only once the inserts succeeded.
pub(super) fn append(tx: &Transaction<'_>, events: &mut [AuditEvent]) -> Result<()> {
    let bodies = events
        .iter()
        .map(canonical_body)
        .collect::<Result<Vec<String>>>()?;
    let (mut seq, head_hash) = head(tx)?;
    let mut prev = head_hash.clone();
    let head_seq = seq;
    let mut chained = events.to_vec();
    let mut lines = Vec::new();
    for (ev, body) in chained.iter_mut().zip(&bodies) {
        seq += 1;
        ev.seq = seq;
        ev.hash = chain_hash(&prev, seq, body);
        ev.prev_hash = std::mem::replace(&mut prev, ev.hash.clone());
        push_line(&mut lines, ev, body)?;
    }
    insert(tx, (head_seq, &head_hash), &chained, &lines, true)?;
    for (ev, c) in events.iter_mut().zip(chained) {
        ev.seq = c.seq;
        ev.prev_hash = c.prev_hash;
        ev.hash = c.hash;
    }
    Ok(())
}

/// One stored block.
struct Block {
    first_seq: u64,
    last_seq: u64,
    first_us: i64,
    last_us: i64,
    last_hash: String,
    lines: String,
}

const BLOCK_COLUMNS: &str = "first_seq, last_seq, first_us, last_us, last_hash, lines";

fn block_from_row(
    row: &rusqlite::Row<'_>,
) -> rusqlite::Result<(i64, i64, i64, i64, String, String)> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
    ))
}

fn block(raw: (i64, i64, i64, i64, String, String)) -> Result<Block> {
    Ok(Block {
        first_seq: to_u64(raw.0)?,
        last_seq: to_u64(raw.1)?,
        first_us: raw.2,
        last_us: raw.3,
        last_hash: raw.4,
        lines: raw.5,
    })
}

fn parse_event(line: &str, block: u64) -> Result<AuditEvent> {
    serde_json::from_str(line).map_err(|e| {
        Error::Store(format!(
            "audit block at event {block}: stored content is not an event: {e}"
        ))
    })
}

/// Blocks that may hold events matching `filter`, as `first_seq`s in chain order; `None`
/// when the filter names no key (every block in range may).
fn candidate_blocks(conn: &Connection, filter: &EventFilter) -> Result<Option<Vec<i64>>> {
    let mut wanted: Vec<Vec<String>> = Vec::new();
    if let Some(s) = &filter.session {
        wanted.push(vec![key('s', s)]);
    }
    if let Some(i) = &filter.identity {
        wanted.push(vec![key('p', i), key('u', i)]);
    }
    if let Some(c) = &filter.connection {
        wanted.push(vec![key('c', c)]);
    }
    if let Some(k) = filter.kind {
        wanted.push(vec![key('k', k.as_str())]);
    }
    if let Some(a) = &filter.approval {
        wanted.push(vec![key('a', a)]);
    }
    if wanted.is_empty() {
        return Ok(None);
    }
    let mut stmt = conn.prepare("SELECT first_seq FROM event_keys WHERE key = ?1")?;
    let mut result: Option<BTreeSet<i64>> = None;
    for any_of in wanted {
        let mut set = BTreeSet::new();
        for k in any_of {
            for seq in stmt.query_map([k], |r| r.get::<_, i64>(0))? {
                set.insert(seq?);
            }
        }
        result = Some(match result {
            None => set,
            Some(prev) => prev.intersection(&set).copied().collect(),
        });
    }
    Ok(Some(result.unwrap_or_default().into_iter().collect()))
}

/// Events matching `filter`, in chain order (the newest `limit` when it is set).
pub(super) fn query(conn: &Connection, filter: &EventFilter) -> Result<Vec<AuditEvent>> {
    let after = to_i64(filter.after_seq.unwrap_or(0));
    let since = filter.since_us.unwrap_or(i64::MIN);
    let newest_first = filter.limit.is_some();
    let limit = filter.limit.unwrap_or(usize::MAX);
    let mut out = Vec::new();
    let take = |b: Block, out: &mut Vec<AuditEvent>| -> Result<bool> {
        let mut found: Vec<AuditEvent> = Vec::new();
        for line in b.lines.lines() {
            let ev = parse_event(line, b.first_seq)?;
            if filter.matches(&ev) {
                found.push(ev);
            }
        }
        if newest_first {
            found.reverse();
        }
        for ev in found {
            if out.len() >= limit {
                return Ok(false);
            }
            out.push(ev);
        }
        Ok(out.len() < limit)
    };
    let order = if newest_first { "DESC" } else { "ASC" };
    match candidate_blocks(conn, filter)? {
        None => {
            let sql = format!(
                "SELECT {BLOCK_COLUMNS} FROM event_blocks WHERE last_seq > ?1 AND last_us >= ?2 \
                 ORDER BY first_seq {order}"
            );
            let mut stmt = conn.prepare(&sql)?;
            let mut rows = stmt.query(params![after, since])?;
            while let Some(row) = rows.next()? {
                if !take(block(block_from_row(row)?)?, &mut out)? {
                    break;
                }
            }
        }
        Some(mut seqs) => {
            if newest_first {
                seqs.reverse();
            }
            let sql = format!(
                "SELECT {BLOCK_COLUMNS} FROM event_blocks \
                 WHERE first_seq = ?1 AND last_seq > ?2 AND last_us >= ?3"
            );
            let mut stmt = conn.prepare(&sql)?;
            for seq in seqs {
                let row = stmt
                    .query_row(params![seq, after, since], block_from_row)
                    .optional()?;
                if let Some(raw) = row
                    && !take(block(raw)?, &mut out)?
                {
                    break;
                }
            }
        }
    }
    if newest_first {
        out.reverse();
    }
    Ok(out)
}

/// Walk every block in order, recompute each event's hash, and stop at the first problem.
pub(super) fn verify(conn: &Connection, probes: &BTreeSet<u64>) -> Result<(ChainReport, Probed)> {
    let mut probed = Probed::default();
    let report = verify_into(conn, probes, &mut probed)?;
    Ok((report, probed))
}

fn verify_into(
    conn: &Connection,
    probes: &BTreeSet<u64>,
    probed: &mut Probed,
) -> Result<ChainReport> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {BLOCK_COLUMNS} FROM event_blocks ORDER BY first_seq"
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
        let b = block(block_from_row(row)?)?;
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

/// Move events from the row-per-event table of schema 1 into blocks, then drop it.
pub(super) fn migrate_from_rows(tx: &Transaction<'_>) -> Result<u64> {
    let exists: bool = tx.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'events'",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(0);
    }
    let mut moved = 0u64;
    let (mut head_seq, mut head_hash) = head(tx)?;
    loop {
        let mut stmt = tx.prepare(
            "SELECT seq, body, prev_hash, hash FROM events WHERE seq > ?1 ORDER BY seq LIMIT 10000",
        )?;
        let rows: Vec<(i64, String, String, String)> = stmt
            .query_map([to_i64(head_seq)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        if rows.is_empty() {
            break;
        }
        let mut events = Vec::with_capacity(rows.len());
        let mut lines = Vec::new();
        for (seq, body, prev_hash, hash) in rows {
            let mut ev: AuditEvent = serde_json::from_str(&body).map_err(|e| {
                Error::Store(format!("event {seq}: stored content is not an event: {e}"))
            })?;
            ev.seq = to_u64(seq)?;
            ev.prev_hash = prev_hash;
            ev.hash = hash;
            push_line(&mut lines, &ev, &body)?;
            events.push(ev);
        }
        insert(tx, (head_seq, &head_hash), &events, &lines, false)?;
        moved += events.len() as u64;
        if let Some(last) = events.last() {
            (head_seq, head_hash) = (last.seq, last.hash.clone());
        }
    }
    tx.execute_batch("DROP TABLE events;")?;
    Ok(moved)
}
