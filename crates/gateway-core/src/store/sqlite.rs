//! The embedded SQLite store: one file in WAL mode holding the hash-chained audit log and the
//! access keys. One connection writes (the audit writer is single anyway); a second one serves
//! reads so that queries never wait behind a commit.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params, params_from_iter};

use super::{AccessKeyRecord, ChainReport, ChainedEvent, Store};
use crate::audit::chain::{GENESIS_HASH, canonical_body, chain_hash};
use crate::audit::event::{AuditEvent, EventFilter};
use crate::error::{Error, Result};

// Approval requests (store/sqlite_approvals.rs): a child module so it shares the connections.
#[path = "sqlite_approvals.rs"]
mod approvals;

/// Version of the schema below; bumped by every migration.
const SCHEMA_VERSION: i64 = 1;
/// How long a statement waits for another process holding the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// WAL pages before an automatic checkpoint (4 KiB each): fewer, larger checkpoints write a
/// page changed by many transactions once.
const WAL_AUTOCHECKPOINT: i64 = 4000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq        INTEGER PRIMARY KEY,
    time_us    INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    session    TEXT NOT NULL,
    principal  TEXT,
    subject    TEXT,
    connection TEXT,
    approval   TEXT,
    body       TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_session ON events(session);
CREATE INDEX IF NOT EXISTS events_kind ON events(kind);
-- Every index is rewritten by every insert; the other filters scan (audit reads are rare,
-- inserts are per statement).
DROP INDEX IF EXISTS events_principal;
DROP INDEX IF EXISTS events_subject;
DROP INDEX IF EXISTS events_connection;
DROP INDEX IF EXISTS events_approval;
DROP INDEX IF EXISTS events_time;
CREATE TABLE IF NOT EXISTS access_keys (
    id          TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL UNIQUE,
    body        TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked     INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1');
";

const LAST_EVENT: &str = "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1";
const INSERT_EVENT: &str = "INSERT INTO events \
    (seq, time_us, kind, session, principal, subject, connection, approval, body, prev_hash, hash) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
const CHAIN_ROWS: &str = "SELECT seq, time_us, kind, session, principal, subject, connection, \
    approval, body, prev_hash, hash FROM events ORDER BY seq";

/// The embedded store.
#[derive(Debug)]
pub struct SqliteStore {
    writer: Mutex<Writer>,
    /// Read connection for file stores; in-memory stores read through the writer.
    reader: Option<Mutex<Connection>>,
    path: Option<PathBuf>,
    /// Opened in fsync mode: every commit is synced, whatever `append_events` asks.
    always_fsync: bool,
}

#[derive(Debug)]
struct Writer {
    conn: Connection,
    /// Whether `synchronous=FULL` is currently set on `conn`.
    full_sync: bool,
}

impl SqliteStore {
    /// Open (or create) the store at `path`; commits survive the process being killed, and a
    /// batch appended with `fsync` also survives power loss.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        SqliteStore::open_with(path, false)
    }

    /// Open (or create) the store at `path`; with `fsync`, every commit is synced to disk.
    pub fn open_with(path: &Path, fsync: bool) -> Result<SqliteStore> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let conn = open_conn(path)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Store(format!(
                "{}: cannot use write-ahead logging (journal mode is {mode})",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", if fsync { "FULL" } else { "NORMAL" })?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT)?;
        init_schema(&conn)?;
        let reader = open_conn(path)?;
        reader.pragma_update(None, "query_only", true)?;
        Ok(SqliteStore {
            writer: Mutex::new(Writer {
                conn,
                full_sync: fsync,
            }),
            reader: Some(Mutex::new(reader)),
            path: Some(path.to_path_buf()),
            always_fsync: fsync,
        })
    }

    /// A private store that lives as long as this value (for tests).
    pub fn open_in_memory() -> Result<SqliteStore> {
        let conn = Connection::open_in_memory()?;
        init_schema(&conn)?;
        Ok(SqliteStore {
            writer: Mutex::new(Writer {
                conn,
                full_sync: false,
            }),
            reader: None,
            path: None,
            always_fsync: false,
        })
    }

    /// The database file, if this store has one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Run `f` on a connection for reading.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        match &self.reader {
            Some(r) => f(&lock(r)),
            None => f(&lock(&self.writer).conn),
        }
    }
}

fn open_conn(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

fn init_schema(conn: &Connection) -> Result<()> {
    conn.execute_batch(SCHEMA)?;
    approvals::init_schema(conn)?;
    let version: String = conn.query_row(
        "SELECT value FROM meta WHERE key = 'schema_version'",
        [],
        |r| r.get(0),
    )?;
    match version.parse::<i64>() {
        Ok(v) if v <= SCHEMA_VERSION => Ok(()),
        _ => Err(Error::Store(format!(
            "database schema version {version} is newer than this gateway supports ({SCHEMA_VERSION})"
        ))),
    }
}

/// A poisoned lock only means a panic happened while it was held; any open transaction was
/// rolled back when it unwound, so the connection is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn to_u64(seq: i64) -> Result<u64> {
    u64::try_from(seq).map_err(|_| Error::Store(format!("invalid event sequence number {seq}")))
}

fn clamp_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn json_err(what: &str, e: serde_json::Error) -> Error {
    Error::Store(format!("{what}: {e}"))
}

/// Insert one event row with its chain fields.
fn insert_row(
    insert: &mut rusqlite::Statement<'_>,
    ev: &AuditEvent,
    seq: i64,
    body: &str,
    prev: &str,
    hash: &str,
) -> Result<()> {
    let id = ev.identity.as_ref();
    insert.execute(params![
        seq,
        ev.time_us,
        ev.kind.as_str(),
        ev.session,
        id.map(|i| i.principal.as_str()),
        id.map(|i| i.subject.as_str()),
        ev.connection,
        ev.approval,
        body,
        prev,
        hash,
    ])?;
    Ok(())
}

impl Store for SqliteStore {
    fn append_events(&self, events: &mut [AuditEvent], fsync: bool) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        // Serialise before taking the lock so the write transaction is only the inserts.
        let bodies = events
            .iter()
            .map(canonical_body)
            .collect::<Result<Vec<String>>>()?;
        let mut guard = lock(&self.writer);
        let w = &mut *guard;
        let full = fsync || self.always_fsync;
        if w.full_sync != full {
            w.conn
                .pragma_update(None, "synchronous", if full { "FULL" } else { "NORMAL" })?;
            w.full_sync = full;
        }
        // IMMEDIATE takes the write lock before reading the chain head, so processes sharing
        // the file cannot both extend the same head.
        let tx = w
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (mut seq, mut prev) = tx
            .query_row(LAST_EVENT, [], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .optional()?
            .unwrap_or_else(|| (0, GENESIS_HASH.to_string()));
        let mut assigned = Vec::with_capacity(events.len());
        {
            let mut insert = tx.prepare(INSERT_EVENT)?;
            for (ev, body) in events.iter().zip(&bodies) {
                seq += 1;
                let seq_u = to_u64(seq)?;
                let hash = chain_hash(&prev, seq_u, body);
                insert_row(&mut insert, ev, seq, body, &prev, &hash)?;
                let next_prev = hash.clone();
                assigned.push((seq_u, std::mem::replace(&mut prev, next_prev), hash));
            }
        }
        tx.commit()?;
        // Only now, when they are stored, do the events get their place in the chain.
        for (ev, (seq, prev_hash, hash)) in events.iter_mut().zip(assigned) {
            ev.seq = seq;
            ev.prev_hash = prev_hash;
            ev.hash = hash;
        }
        Ok(())
    }

    fn insert_chained(&self, events: &[ChainedEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut guard = lock(&self.writer);
        let w = &mut *guard;
        if w.full_sync != self.always_fsync {
            let mode = if self.always_fsync { "FULL" } else { "NORMAL" };
            w.conn.pragma_update(None, "synchronous", mode)?;
            w.full_sync = self.always_fsync;
        }
        let tx = w
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (last_seq, last_hash) = tx
            .query_row(LAST_EVENT, [], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .optional()?
            .unwrap_or_else(|| (0, GENESIS_HASH.to_string()));
        let last_seq = to_u64(last_seq)?;
        let mut prev: (u64, &str) = (last_seq, &last_hash);
        {
            let mut insert = tx.prepare(INSERT_EVENT)?;
            for c in events {
                let ev = &c.event;
                if ev.seq < last_seq {
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
                insert_row(
                    &mut insert,
                    ev,
                    clamp_i64(ev.seq),
                    &c.body,
                    &ev.prev_hash,
                    &ev.hash,
                )?;
                prev = (ev.seq, &ev.hash);
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn last_event(&self) -> Result<Option<(u64, String)>> {
        let last = self.read(|conn| {
            Ok(conn
                .query_row(LAST_EVENT, [], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })
                .optional()?)
        })?;
        last.map(|(seq, hash)| Ok((to_u64(seq)?, hash))).transpose()
    }

    fn query_events(&self, filter: &EventFilter) -> Result<Vec<AuditEvent>> {
        if filter.limit == Some(0) {
            return Ok(Vec::new());
        }
        let (sql, args) = query_sql(filter);
        let mut events = self.read(|conn| {
            let mut stmt = conn.prepare(&sql)?;
            let mut rows = stmt.query(params_from_iter(args))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(event_from_row(row)?);
            }
            Ok(out)
        })?;
        if filter.limit.is_some() {
            // Fetched newest first to take the last n; hand them back in chain order.
            events.reverse();
        }
        Ok(events)
    }

    fn verify_chain(&self) -> Result<ChainReport> {
        match &self.path {
            // Its own connection, so a long walk never holds up access-key lookups.
            Some(path) => verify_on(&open_conn(path)?),
            None => self.read(verify_on),
        }
    }

    fn put_access_key(&self, key: &AccessKeyRecord) -> Result<()> {
        let body = serde_json::to_string(key).map_err(|e| json_err("access key", e))?;
        lock(&self.writer).conn.execute(
            "INSERT INTO access_keys (id, secret_hash, body, expires_at, revoked) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![key.id, key.secret_hash, body, key.expires_at, key.revoked],
        )?;
        Ok(())
    }

    fn access_key_by_hash(&self, secret_hash: &str) -> Result<Option<AccessKeyRecord>> {
        let found = self.read(|conn| {
            Ok(conn
                .query_row(
                    "SELECT body, revoked FROM access_keys WHERE secret_hash = ?1",
                    [secret_hash],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)),
                )
                .optional()?)
        })?;
        let Some((body, revoked)) = found else {
            return Ok(None);
        };
        let mut key: AccessKeyRecord =
            serde_json::from_str(&body).map_err(|e| json_err("stored access key", e))?;
        // The column is what revocation updates; the body keeps the key as minted.
        key.revoked = revoked;
        Ok(Some(key))
    }

    fn revoke_access_key(&self, id: &str) -> Result<bool> {
        let n = lock(&self.writer)
            .conn
            .execute("UPDATE access_keys SET revoked = 1 WHERE id = ?1", [id])?;
        Ok(n > 0)
    }
}

/// The SELECT for `filter` and its arguments.
fn query_sql(filter: &EventFilter) -> (String, Vec<Value>) {
    let mut sql = String::from("SELECT seq, body, prev_hash, hash FROM events WHERE 1 = 1");
    let mut args: Vec<Value> = Vec::new();
    let mut cond = |sql: &mut String, clause: &str, v: Value| {
        args.push(v);
        sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
    };
    if let Some(s) = &filter.session {
        cond(&mut sql, " AND session = ?", Value::Text(s.clone()));
    }
    if let Some(who) = &filter.identity {
        // One argument used twice: `?N` may appear more than once.
        cond(
            &mut sql,
            " AND (principal = ? OR subject = ?)",
            Value::Text(who.clone()),
        );
    }
    if let Some(c) = &filter.connection {
        cond(&mut sql, " AND connection = ?", Value::Text(c.clone()));
    }
    if let Some(k) = filter.kind {
        cond(
            &mut sql,
            " AND kind = ?",
            Value::Text(k.as_str().to_string()),
        );
    }
    if let Some(a) = &filter.approval {
        cond(&mut sql, " AND approval = ?", Value::Text(a.clone()));
    }
    if let Some(after) = filter.after_seq {
        cond(&mut sql, " AND seq > ?", Value::Integer(clamp_i64(after)));
    }
    if let Some(since) = filter.since_us {
        cond(&mut sql, " AND time_us >= ?", Value::Integer(since));
    }
    match filter.limit {
        Some(n) => cond(
            &mut sql,
            " ORDER BY seq DESC LIMIT ?",
            Value::Integer(clamp_i64(n as u64)),
        ),
        None => sql.push_str(" ORDER BY seq"),
    }
    (sql, args)
}

/// An event from a `seq, body, prev_hash, hash` row.
fn event_from_row(row: &Row<'_>) -> Result<AuditEvent> {
    let seq = to_u64(row.get(0)?)?;
    let body: String = row.get(1)?;
    let mut ev: AuditEvent = serde_json::from_str(&body)
        .map_err(|e| Error::Store(format!("event {seq}: stored content is not an event: {e}")))?;
    ev.seq = seq;
    ev.prev_hash = row.get(2)?;
    ev.hash = row.get(3)?;
    Ok(ev)
}

/// Walk the chain in order, one row at a time, and stop at the first problem.
fn verify_on(conn: &Connection) -> Result<ChainReport> {
    let mut stmt = conn.prepare(CHAIN_ROWS)?;
    let mut rows = stmt.query([])?;
    let mut checked = 0u64;
    let mut expect_seq: i64 = 1;
    let mut expect_prev = GENESIS_HASH.to_string();
    let problem = |checked: u64, seq: i64, msg: String| ChainReport {
        events: checked,
        problem: Some((u64::try_from(seq).unwrap_or(0), msg)),
    };
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
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
        let seq_u = to_u64(seq)?;
        let body: String = row.get(8)?;
        let prev_hash: String = row.get(9)?;
        let hash: String = row.get(10)?;
        if prev_hash != expect_prev {
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
        let computed = chain_hash(&prev_hash, seq_u, &body);
        if computed != hash {
            // If the next event links to the recomputed hash, the content is intact and only
            // the stored hash was changed.
            let next_prev: Option<String> = match rows.next()? {
                Some(next) => Some(next.get(9)?),
                None => None,
            };
            let msg = if next_prev.as_deref() == Some(computed.as_str()) {
                format!("event {seq}: stored hash was altered (edited)")
            } else {
                format!("event {seq}: content does not match its hash (edited)")
            };
            return Ok(problem(checked, seq, msg));
        }
        if let Some(col) = index_mismatch(row, &body)? {
            let msg = format!("event {seq}: column `{col}` does not match its content (edited)");
            return Ok(problem(checked, seq, msg));
        }
        checked += 1;
        expect_seq += 1;
        expect_prev = hash;
    }
    Ok(ChainReport {
        events: checked,
        problem: None,
    })
}

/// The first queryable column of a chain row that disagrees with the hashed body. The hash
/// does not cover these columns, so an edit to them would otherwise hide events from queries.
fn index_mismatch(row: &Row<'_>, body: &str) -> Result<Option<&'static str>> {
    let Ok(ev) = serde_json::from_str::<AuditEvent>(body) else {
        return Ok(Some("body"));
    };
    let id = ev.identity.as_ref();
    let checks: [(&'static str, bool); 7] = [
        ("time_us", row.get::<_, i64>(1)? == ev.time_us),
        ("kind", row.get::<_, String>(2)? == ev.kind.as_str()),
        ("session", row.get::<_, String>(3)? == ev.session),
        (
            "principal",
            row.get::<_, Option<String>>(4)?.as_deref() == id.map(|i| i.principal.as_str()),
        ),
        (
            "subject",
            row.get::<_, Option<String>>(5)?.as_deref() == id.map(|i| i.subject.as_str()),
        ),
        (
            "connection",
            row.get::<_, Option<String>>(6)? == ev.connection,
        ),
        ("approval", row.get::<_, Option<String>>(7)? == ev.approval),
    ];
    Ok(checks.iter().find(|(_, ok)| !ok).map(|(col, _)| *col))
}

#[cfg(test)]
pub(crate) mod tests;
