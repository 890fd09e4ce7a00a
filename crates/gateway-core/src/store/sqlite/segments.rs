//! Blocks kept by position: the journal segment holding a block's lines stays on disk as the
//! archive, and the block row names the segment and the byte range instead of copying the
//! lines. Blocks of older stores (and of events appended without a journal) keep their lines
//! inline; both read the same.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Transaction};

use crate::error::{Error, Result};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS event_segments (
    id       INTEGER PRIMARY KEY,
    location TEXT NOT NULL UNIQUE
);
";

/// A block's lines may not be larger than this (a bound on what a read allocates; blocks are
/// closed at a quarter of it).
const MAX_BLOCK_READ: u64 = 16 << 20;

/// Whether `event_blocks` has the position columns (a store migrated to schema 3).
pub(super) fn positional(conn: &Connection) -> Result<bool> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('event_blocks')")?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(names.iter().any(|n| n == "segment"))
}

/// Add the position columns to a store that lacks them.
pub(super) fn migrate(conn: &Connection) -> Result<()> {
    conn.execute_batch(SCHEMA)?;
    if !positional(conn)? {
        conn.execute_batch(
            "ALTER TABLE event_blocks ADD COLUMN segment INTEGER;
             ALTER TABLE event_blocks ADD COLUMN seg_offset INTEGER;
             ALTER TABLE event_blocks ADD COLUMN seg_length INTEGER;",
        )?;
    }
    Ok(())
}

/// The columns a block is read with: its bounds, inline lines, and position (NULLs in a store
/// without positions).
pub(super) fn block_select(positional: bool) -> &'static str {
    if positional {
        "SELECT b.first_seq, b.last_seq, b.first_us, b.last_us, b.last_hash, b.lines, \
         s.location, b.seg_offset, b.seg_length \
         FROM event_blocks b LEFT JOIN event_segments s ON s.id = b.segment"
    } else {
        "SELECT b.first_seq, b.last_seq, b.first_us, b.last_us, b.last_hash, b.lines, \
         NULL, NULL, NULL FROM event_blocks b"
    }
}

/// The id of the segment at `path`, recorded relative to `base` (the store's directory) when
/// it lies under it, so the state directory can move as a whole.
pub(super) fn segment_id(tx: &Transaction<'_>, base: Option<&Path>, path: &Path) -> Result<i64> {
    let location = base
        .and_then(|b| path.strip_prefix(b).ok())
        .unwrap_or(path)
        .to_str()
        .ok_or_else(|| {
            Error::Store(format!(
                "journal segment path is not UTF-8: {}",
                path.display()
            ))
        })?
        .to_string();
    tx.execute(
        "INSERT OR IGNORE INTO event_segments (location) VALUES (?1)",
        [&location],
    )?;
    let id = tx
        .query_row(
            "SELECT id FROM event_segments WHERE location = ?1",
            [&location],
            |r| r.get::<_, i64>(0),
        )
        .optional()?;
    id.ok_or_else(|| Error::Store(format!("journal segment {location} was not recorded")))
}

/// Where a recorded location is on disk.
pub(super) fn resolve(base: Option<&Path>, location: &str) -> PathBuf {
    let p = Path::new(location);
    match base {
        Some(b) if p.is_relative() => b.join(p),
        _ => p.to_path_buf(),
    }
}

/// Read a block's lines from its segment: `Err` says why they cannot be read (a segment
/// removed or cut short), for the caller to report as missing events.
pub(super) fn read_lines(
    base: Option<&Path>,
    location: &str,
    offset: i64,
    length: i64,
) -> std::result::Result<String, String> {
    let path = resolve(base, location);
    let (Ok(offset), Ok(length)) = (u64::try_from(offset), u64::try_from(length)) else {
        return Err(format!(
            "its position in {} is invalid (edited)",
            path.display()
        ));
    };
    if length > MAX_BLOCK_READ {
        return Err(format!(
            "its length in {} ({length} bytes) is invalid (edited)",
            path.display()
        ));
    }
    let read = || -> std::io::Result<Vec<u8>> {
        let mut f = std::fs::File::open(&path)?;
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::with_capacity(length as usize);
        f.take(length).read_to_end(&mut buf)?;
        Ok(buf)
    };
    match read() {
        Ok(buf) if buf.len() as u64 == length => String::from_utf8(buf)
            .map_err(|_| format!("its lines in {} are not text (edited)", path.display())),
        Ok(buf) => Err(format!(
            "its journal segment {} ends {} bytes short (cut?)",
            path.display(),
            length - buf.len() as u64
        )),
        Err(e) => Err(format!(
            "its journal segment {} cannot be read (removed?): {e}",
            path.display()
        )),
    }
}
