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
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::error::{Error, Result};
use crate::event::chain::{GENESIS_HASH, canonical_body, chain_hash};
use crate::event::line::push_line;
use crate::event::{AuditEvent, EventFilter};

use super::segments;

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
    (first_seq, last_seq, first_us, last_us, last_hash, lines, segment, seg_offset, seg_length) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

/// How a store's blocks are read: the directory relative segment locations are under, and
/// whether blocks have position columns at all.
#[derive(Debug, Clone, Copy)]
pub(super) struct Layout<'a> {
    pub base: Option<&'a Path>,
    pub positional: bool,
}
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

/// Insert chained events (with their lines) that continue the chain at `head`, in blocks.
/// Events at or before the head are skipped; the one at the head must have its hash. With
/// `check` unset the events are taken as they are (a migration copies what it finds, and
/// `verify` reports any damage).
pub(super) fn insert(
    tx: &Transaction<'_>,
    head: (u64, &str),
    events: &[&AuditEvent],
    lines: &[&str],
    check: bool,
    at: Option<(i64, u64)>,
) -> Result<()> {
    if lines.len() != events.len() {
        return Err(Error::Store(format!(
            "{} audit events came with {} lines",
            events.len(),
            lines.len()
        )));
    }
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
    // Where the block being built starts in the segment, and its length so far.
    let skipped: usize = lines[..start].iter().map(|l| l.len() + 1).sum();
    let mut offset = at.map(|(_, o)| o + skipped as u64);
    let mut bytes = 0usize;
    let mut from = start;
    for i in start..events.len() {
        if at.is_none() {
            text.push_str(lines[i]);
            text.push('\n');
        }
        bytes += lines[i].len() + 1;
        keys_of(events[i], &mut keys);
        let full = i + 1 - from >= BLOCK_EVENTS || bytes >= BLOCK_BYTES;
        if full || i + 1 == events.len() {
            let (first, last) = (&events[from], &events[i]);
            let first_seq = to_i64(first.seq);
            insert_block.execute(params![
                first_seq,
                to_i64(last.seq),
                first.time_us,
                last.time_us,
                last.hash,
                text,
                at.map(|(segment, _)| segment),
                offset.map(to_i64),
                at.map(|_| to_i64(bytes as u64)),
            ])?;
            for (tag, value) in &keys {
                insert_key.execute(params![key(*tag, value), first_seq])?;
            }
            text.clear();
            keys.clear();
            offset = offset.map(|o| o + bytes as u64);
            bytes = 0;
            from = i + 1;
        }
    }
    Ok(())
}

/// [`insert`] for owned events and their lines in one buffer, each ending in a newline.
fn insert_owned(
    tx: &Transaction<'_>,
    head: (u64, &str),
    events: &[AuditEvent],
    lines: &[u8],
    check: bool,
) -> Result<()> {
    let text = std::str::from_utf8(lines)
        .map_err(|_| Error::Store("audit event lines are not UTF-8".to_string()))?;
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    let events: Vec<&AuditEvent> = events.iter().collect();
    insert(tx, head, &events, &lines, check, None)
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
    insert_owned(tx, (head_seq, &head_hash), &chained, &lines, true)?;
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

/// A block row as read: bounds, inline lines, and the segment position if it has one.
struct RawBlock {
    bounds: (i64, i64, i64, i64, String),
    lines: String,
    at: Option<(String, i64, i64)>,
}

fn block_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawBlock> {
    let location: Option<String> = row.get(6)?;
    let at = match (
        location,
        row.get::<_, Option<i64>>(7)?,
        row.get::<_, Option<i64>>(8)?,
    ) {
        (Some(l), Some(o), Some(n)) => Some((l, o, n)),
        _ => None,
    };
    Ok(RawBlock {
        bounds: (
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
        ),
        lines: row.get(5)?,
        at,
    })
}

/// The block with its lines; the inner `Err` says why its segment cannot be read.
fn block(raw: RawBlock, layout: Layout<'_>) -> Result<std::result::Result<Block, String>> {
    let (first_seq, last_seq, first_us, last_us, last_hash) = raw.bounds;
    let lines = match raw.at {
        None => raw.lines,
        Some((location, offset, length)) => {
            match segments::read_lines(layout.base, &location, offset, length) {
                Ok(lines) => lines,
                Err(why) => return Ok(Err(why)),
            }
        }
    };
    Ok(Ok(Block {
        first_seq: to_u64(first_seq)?,
        last_seq: to_u64(last_seq)?,
        first_us,
        last_us,
        last_hash,
        lines,
    }))
}

/// [`block`], failing when its segment cannot be read.
fn readable(raw: RawBlock, layout: Layout<'_>) -> Result<Block> {
    let first = raw.bounds.0;
    block(raw, layout)?.map_err(|why| Error::Store(format!("audit block at event {first}: {why}")))
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
pub(super) fn query(
    conn: &Connection,
    filter: &EventFilter,
    layout: Layout<'_>,
) -> Result<Vec<AuditEvent>> {
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
                "{} WHERE b.last_seq > ?1 AND b.last_us >= ?2 ORDER BY b.first_seq {order}",
                segments::block_select(layout.positional)
            );
            let mut stmt = conn.prepare(&sql)?;
            let mut rows = stmt.query(params![after, since])?;
            while let Some(row) = rows.next()? {
                if !take(readable(block_from_row(row)?, layout)?, &mut out)? {
                    break;
                }
            }
        }
        Some(mut seqs) => {
            if newest_first {
                seqs.reverse();
            }
            let sql = format!(
                "{} WHERE b.first_seq = ?1 AND b.last_seq > ?2 AND b.last_us >= ?3",
                segments::block_select(layout.positional)
            );
            let mut stmt = conn.prepare(&sql)?;
            for seq in seqs {
                let row = stmt
                    .query_row(params![seq, after, since], block_from_row)
                    .optional()?;
                if let Some(raw) = row
                    && !take(readable(raw, layout)?, &mut out)?
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
        insert_owned(tx, (head_seq, &head_hash), &events, &lines, false)?;
        moved += events.len() as u64;
        if let Some(last) = events.last() {
            (head_seq, head_hash) = (last.seq, last.hash.clone());
        }
    }
    tx.execute_batch("DROP TABLE events;")?;
    Ok(moved)
}

mod verify;
pub(super) use verify::verify;
