//! The embedded SQLite store: one file in WAL mode holding the hash-chained audit log and the
//! access keys. One connection writes (the audit writer is single anyway); a second one serves
//! reads so that queries never wait behind a commit.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{AccessKeyRecord, ChainReport, Probed, SegmentAt, Store};
use crate::error::{Error, Result};
use crate::event::{AuditEvent, EventFilter};

// Approval requests (store/sqlite_approvals.rs): a child module so it shares the connections.
#[path = "sqlite_approvals.rs"]
mod approvals;

/// Version of the schema below; bumped by every migration.
const SCHEMA_VERSION: i64 = 3;
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
CREATE TABLE IF NOT EXISTS access_keys (
    id          TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL UNIQUE,
    body        TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked     INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '2');
";

/// The embedded store.
#[derive(Debug)]
pub struct SqliteStore {
    writer: Mutex<Writer>,
    /// Read connection for file stores; in-memory stores read through the writer.
    reader: Option<Mutex<Connection>>,
    path: Option<PathBuf>,
    /// The directory segment locations are relative to: the database's own.
    base: Option<PathBuf>,
    /// Whether blocks carry segment positions (false only for an old store read as it is).
    positional: bool,
    /// Opened in fsync mode: every commit is synced, whatever `append_events` asks.
    always_fsync: bool,
}

#[derive(Debug)]
struct Writer {
    conn: Connection,
    /// Whether `synchronous=FULL` is currently set on `conn`.
    full_sync: bool,
}

impl Writer {
    /// Sync every commit to disk (`full`) or only checkpoints.
    fn set_sync(&mut self, full: bool) -> Result<()> {
        if self.full_sync != full {
            let mode = if full { "FULL" } else { "NORMAL" };
            self.conn.pragma_update(None, "synchronous", mode)?;
            self.full_sync = full;
        }
        Ok(())
    }
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
        let mut conn = open_conn(path)?;
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
        init_schema(&mut conn)?;
        let reader = open_conn(path)?;
        reader.pragma_update(None, "query_only", true)?;
        Ok(SqliteStore {
            writer: Mutex::new(Writer {
                conn,
                full_sync: fsync,
            }),
            reader: Some(Mutex::new(reader)),
            path: Some(path.to_path_buf()),
            base: Some(base_of(path)),
            positional: true,
            always_fsync: fsync,
        })
    }

    /// A private store that lives as long as this value (for tests).
    pub fn open_in_memory() -> Result<SqliteStore> {
        let mut conn = Connection::open_in_memory()?;
        init_schema(&mut conn)?;
        Ok(SqliteStore {
            writer: Mutex::new(Writer {
                conn,
                full_sync: false,
            }),
            reader: None,
            path: None,
            base: None,
            positional: true,
            always_fsync: false,
        })
    }

    /// The database file, if this store has one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn layout(&self) -> events::Layout<'_> {
        events::Layout {
            base: self.base.as_deref(),
            positional: self.positional,
        }
    }

    /// Run `f` on a connection for reading.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        match &self.reader {
            Some(r) => f(&lock(r)),
            None => f(&lock(&self.writer).conn),
        }
    }
}

/// Walk the chain of the store at `path` without writing anything, not even the files a
/// writable connection would create: for `audit verify`, which must leave the evidence as it
/// found it. A store that does not exist holds no events.
pub fn verify_read_only(
    path: &Path,
    probes: &std::collections::BTreeSet<u64>,
) -> Result<(ChainReport, Probed)> {
    use rusqlite::OpenFlags;
    if !path.exists() {
        return Ok((
            ChainReport {
                events: 0,
                problem: None,
            },
            Probed::default(),
        ));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let conn = if Path::new(&wal).exists() {
        // A gateway has it open (or was killed): the write-ahead log holds recent commits.
        Connection::open_with_flags(path, flags)?
    } else {
        // Nobody has it open: everything is in the main file, which a read-only connection
        // can read as immutable without creating the shared-memory file.
        let escaped = path
            .to_string_lossy()
            .replace('%', "%25")
            .replace('?', "%3f")
            .replace('#', "%23");
        let uri = format!("file:{escaped}?immutable=1");
        Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)?
    };
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let base = base_of(path);
    let layout = events::Layout {
        base: Some(&base),
        positional: segments::positional(&conn)?,
    };
    events::verify(&conn, probes, layout)
}

/// The directory a database's segment locations are relative to.
fn base_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn open_conn(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

fn init_schema(conn: &mut Connection) -> Result<()> {
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch(events::SCHEMA)?;
    approvals::init_schema(conn)?;
    let version: String = conn.query_row(
        "SELECT value FROM meta WHERE key = 'schema_version'",
        [],
        |r| r.get(0),
    )?;
    match version.parse::<i64>() {
        Ok(v) if v < SCHEMA_VERSION => {
            // Schema 1 kept a row per event; schema 2 keeps them in blocks; schema 3 lets a
            // block name its place in a journal segment instead of holding a copy.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            segments::migrate(&tx)?;
            let moved = if v < 2 {
                events::migrate_from_rows(&tx)?
            } else {
                0
            };
            tx.execute(
                "UPDATE meta SET value = ?1 WHERE key = 'schema_version'",
                [SCHEMA_VERSION.to_string()],
            )?;
            tx.commit()?;
            if moved > 0 {
                tracing::info!(events = moved, "audit events moved to the block layout");
            }
            Ok(())
        }
        Ok(v) if v == SCHEMA_VERSION => Ok(()),
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

fn json_err(what: &str, e: serde_json::Error) -> Error {
    Error::Store(format!("{what}: {e}"))
}

impl Store for SqliteStore {
    fn append_events(&self, events: &mut [AuditEvent], fsync: bool) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut guard = lock(&self.writer);
        let w = &mut *guard;
        w.set_sync(fsync || self.always_fsync)?;
        // IMMEDIATE takes the write lock before reading the chain head, so processes sharing
        // the file cannot both extend the same head.
        let tx = w
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        events::append(&tx, events)?;
        tx.commit()?;
        Ok(())
    }

    fn insert_chained(
        &self,
        events: &[&AuditEvent],
        lines: &[&str],
        at: Option<SegmentAt<'_>>,
    ) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut guard = lock(&self.writer);
        let w = &mut *guard;
        w.set_sync(self.always_fsync)?;
        let tx = w
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (seq, hash) = events::head(&tx)?;
        let at = match at {
            Some(at) => Some((
                segments::segment_id(&tx, self.base.as_deref(), at.path)?,
                at.offset,
            )),
            None => None,
        };
        events::insert(&tx, (seq, &hash), events, lines, true, at)?;
        tx.commit()?;
        Ok(())
    }

    fn last_event(&self) -> Result<Option<(u64, String)>> {
        let (seq, hash) = self.read(events::head)?;
        Ok((seq > 0).then_some((seq, hash)))
    }

    fn query_events(&self, filter: &EventFilter) -> Result<Vec<AuditEvent>> {
        if filter.limit == Some(0) {
            return Ok(Vec::new());
        }
        self.read(|conn| events::query(conn, filter, self.layout()))
    }

    fn verify_chain(&self) -> Result<ChainReport> {
        Ok(self.verify_chain_probing(&Default::default())?.0)
    }

    fn verify_chain_probing(
        &self,
        probes: &std::collections::BTreeSet<u64>,
    ) -> Result<(ChainReport, Probed)> {
        match &self.path {
            // Its own connection, so a long walk never holds up access-key lookups.
            Some(path) => events::verify(&open_conn(path)?, probes, self.layout()),
            None => self.read(|conn| events::verify(conn, probes, self.layout())),
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

mod events;
mod segments;
#[cfg(test)]
pub(crate) mod tests;
