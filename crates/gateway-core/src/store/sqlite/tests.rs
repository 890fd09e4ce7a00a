//! Tests of the SQLite store: the hash chain catches tampering done straight on the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::*;
use crate::event::chain::{GENESIS_HASH, canonical_body, chain_hash};
use crate::event::line::push_line;
use crate::event::{EventKind, IdentityRecord};
use crate::identity::AuthMethod;

/// A fresh directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "portcullis-{tag}-{}-{}",
            std::process::id(),
            crate::util::random_hex(6)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A command event by `who` in `session` whose statement is `select {i}`.
pub(crate) fn command_event(session: &str, who: &str, i: u64) -> AuditEvent {
    let mut ev = AuditEvent::new(EventKind::Command, session);
    ev.identity = Some(std::sync::Arc::new(IdentityRecord {
        principal: format!("entra/{who}"),
        issuer: "entra".to_string(),
        subject: who.to_string(),
        display_name: None,
        groups: vec!["dba".to_string()],
        claims: BTreeMap::new(),
        method: AuthMethod::Jwt,
    }));
    ev.connection = Some("orders".into());
    ev.statement = Some(format!("select {i}"));
    ev
}

/// A file store in `dir` holding `n` events, appended in batches of 7.
fn store_with(dir: &TempDir, n: u64) -> SqliteStore {
    let store = SqliteStore::open(&dir.path().join("audit.db")).unwrap();
    let mut events: Vec<AuditEvent> = (1..=n).map(|i| command_event("s1", "alice", i)).collect();
    for chunk in events.chunks_mut(7) {
        store.append_events(chunk, false).unwrap();
    }
    store
}

fn raw(store: &SqliteStore) -> Connection {
    Connection::open(store.path().unwrap()).unwrap()
}

/// Rewrite, straight on the file, the lines of the block that holds event `seq`.
fn edit_lines(store: &SqliteStore, seq: u64, f: impl FnOnce(&mut Vec<String>)) {
    let conn = raw(store);
    let (first, text): (i64, String) = conn
        .query_row(
            "SELECT first_seq, lines FROM event_blocks WHERE first_seq <= ?1 AND last_seq >= ?1",
            [seq as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    f(&mut lines);
    let mut text = lines.join("\n");
    text.push('\n');
    conn.execute(
        "UPDATE event_blocks SET lines = ?1 WHERE first_seq = ?2",
        params![text, first],
    )
    .unwrap();
}

/// Where event `seq` is in a block's lines.
fn line_of(lines: &[String], seq: u64) -> usize {
    let head = format!("{{\"seq\":{seq},");
    lines.iter().position(|l| l.starts_with(&head)).unwrap()
}

fn problem(store: &SqliteStore) -> (u64, String) {
    store
        .verify_chain()
        .unwrap()
        .problem
        .expect("tampering not detected")
}

#[test]
fn chain_of_100_verifies() {
    let dir = TempDir::new("chain");
    let store = store_with(&dir, 100);
    assert_eq!(
        store.verify_chain().unwrap(),
        ChainReport {
            events: 100,
            problem: None
        }
    );
    let all = store.query_events(&EventFilter::default()).unwrap();
    assert_eq!(all.len(), 100);
    assert_eq!(all[0].prev_hash, GENESIS_HASH);
    for (i, ev) in all.iter().enumerate() {
        assert_eq!(ev.seq, i as u64 + 1);
        assert_eq!(
            ev.statement.as_deref(),
            Some(format!("select {}", i + 1).as_str())
        );
        assert_eq!(
            ev.hash,
            chain_hash(&ev.prev_hash, ev.seq, &canonical_body(ev).unwrap())
        );
        if i > 0 {
            assert_eq!(ev.prev_hash, all[i - 1].hash);
        }
    }
}

#[test]
fn empty_store_verifies() {
    let store = SqliteStore::open_in_memory().unwrap();
    assert_eq!(
        store.verify_chain().unwrap(),
        ChainReport {
            events: 0,
            problem: None
        }
    );
}

#[test]
fn append_assigns_chain_fields() {
    let store = SqliteStore::open_in_memory().unwrap();
    let mut evs = vec![command_event("s", "bob", 1), command_event("s", "bob", 2)];
    store.append_events(&mut evs, false).unwrap();
    assert_eq!((evs[0].seq, evs[1].seq), (1, 2));
    assert_eq!(evs[0].prev_hash, GENESIS_HASH);
    assert_eq!(evs[1].prev_hash, evs[0].hash);
    assert_eq!(store.query_events(&EventFilter::default()).unwrap(), evs);
}

#[test]
fn edited_content_is_detected() {
    let dir = TempDir::new("edit");
    let store = store_with(&dir, 20);
    let n = raw(&store)
        .execute(
            "UPDATE event_blocks SET lines = replace(lines, '\"select 7\"', '\"select 8\"')",
            [],
        )
        .unwrap();
    assert_eq!(n, 3);
    let (seq, msg) = problem(&store);
    assert_eq!(seq, 7);
    assert_eq!(msg, "event 7: content does not match its hash (edited)");
}

#[test]
fn deleted_event_is_detected() {
    let dir = TempDir::new("delete");
    let store = store_with(&dir, 20);
    edit_lines(&store, 10, |lines| {
        let i = line_of(lines, 10);
        lines.remove(i);
    });
    assert_eq!(
        problem(&store),
        (10, "event 10 is missing (deleted?)".to_string())
    );
}

#[test]
fn deleted_block_is_detected() {
    let dir = TempDir::new("delete-first");
    let store = store_with(&dir, 20);
    raw(&store)
        .execute("DELETE FROM event_blocks WHERE first_seq = 1", [])
        .unwrap();
    assert_eq!(
        problem(&store),
        (1, "events 1 to 7 are missing (deleted?)".to_string())
    );
}

#[test]
fn swapped_contents_are_detected() {
    let dir = TempDir::new("swap-body");
    let store = store_with(&dir, 20);
    edit_lines(&store, 5, |lines| {
        let (a, b) = (line_of(lines, 5), line_of(lines, 6));
        lines[a] = lines[a].replace("select 5", "select 6");
        lines[b] = lines[b].replace("select 6", "select 5");
    });
    let (seq, msg) = problem(&store);
    assert_eq!(seq, 5);
    assert!(msg.contains("content does not match its hash"), "{msg}");
}

#[test]
fn reordered_events_are_detected() {
    let dir = TempDir::new("reorder");
    let store = store_with(&dir, 20);
    // Swap two whole events, hashes included, keeping only the sequence numbers in place.
    edit_lines(&store, 5, |lines| {
        let (a, b) = (line_of(lines, 5), line_of(lines, 6));
        lines.swap(a, b);
        lines[a] = lines[a].replacen("{\"seq\":6,", "{\"seq\":5,", 1);
        lines[b] = lines[b].replacen("{\"seq\":5,", "{\"seq\":6,", 1);
    });
    let (seq, msg) = problem(&store);
    assert_eq!(seq, 5);
    assert!(msg.contains("does not follow event 4"), "{msg}");
}

#[test]
fn edited_hash_is_detected() {
    let dir = TempDir::new("hash");
    let store = store_with(&dir, 20);
    edit_lines(&store, 8, |lines| {
        let i = line_of(lines, 8);
        let at = lines[i].rfind(",\"hash\":\"").unwrap();
        lines[i] = format!("{},\"hash\":\"{}\"}}", &lines[i][..at], "f".repeat(64));
    });
    assert_eq!(
        problem(&store),
        (8, "event 8: stored hash was altered (edited)".to_string())
    );
}

#[test]
fn edited_or_deleted_index_keys_are_detected() {
    let dir = TempDir::new("keys");
    let store = store_with(&dir, 20);
    let conn = raw(&store);
    conn.execute(
        "UPDATE event_keys SET key = 'p:entra/mallory' WHERE key = 'p:entra/alice' AND first_seq = 8",
        [],
    )
    .unwrap();
    let (seq, msg) = problem(&store);
    assert_eq!(seq, 8);
    assert!(
        msg.contains("events 8 to 14: the block's index keys"),
        "{msg}"
    );
    conn.execute("DELETE FROM event_keys WHERE key = 'p:entra/mallory'", [])
        .unwrap();
    assert!(problem(&store).1.contains("index keys"));
    // A block whose bounds were changed to hide it from time or seq ranges.
    conn.execute(
        "INSERT INTO event_keys (key, first_seq) VALUES ('p:entra/alice', 8)",
        [],
    )
    .unwrap();
    assert_eq!(store.verify_chain().unwrap().problem, None);
    conn.execute(
        "UPDATE event_blocks SET last_us = 0 WHERE first_seq = 15",
        [],
    )
    .unwrap();
    assert_eq!(
        problem(&store),
        (
            15,
            "events 15 to 20: the block's bounds do not match its content (edited)".to_string()
        )
    );
}

#[test]
fn schema_1_rows_move_into_blocks() {
    let dir = TempDir::new("migrate");
    let path = dir.path().join("audit.db");
    {
        // A store as schema 1 left it: one row per event.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             INSERT INTO meta VALUES ('schema_version', '1');
             CREATE TABLE events (seq INTEGER PRIMARY KEY, time_us INTEGER NOT NULL,
                 kind TEXT NOT NULL, session TEXT NOT NULL, principal TEXT, subject TEXT,
                 connection TEXT, approval TEXT, body TEXT NOT NULL, prev_hash TEXT NOT NULL,
                 hash TEXT NOT NULL);",
        )
        .unwrap();
        let mut prev = GENESIS_HASH.to_string();
        for seq in 1..=30u64 {
            let ev = command_event(if seq % 2 == 0 { "s2" } else { "s1" }, "alice", seq);
            let body = canonical_body(&ev).unwrap();
            let hash = chain_hash(&prev, seq, &body);
            conn.execute(
                "INSERT INTO events (seq, time_us, kind, session, body, prev_hash, hash)
                 VALUES (?1, ?2, 'command', ?3, ?4, ?5, ?6)",
                params![seq as i64, ev.time_us, ev.session, body, prev, hash],
            )
            .unwrap();
            prev = hash;
        }
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        store.verify_chain().unwrap(),
        ChainReport {
            events: 30,
            problem: None
        }
    );
    let s2 = store
        .query_events(&EventFilter {
            session: Some("s2".into()),
            ..EventFilter::default()
        })
        .unwrap();
    assert_eq!(s2.len(), 15);
    assert_eq!(s2[0].statement.as_deref(), Some("select 2"));
    // The chain goes on from the migrated events.
    let mut more = vec![command_event("s3", "bob", 31)];
    store.append_events(&mut more, false).unwrap();
    assert_eq!(more[0].seq, 31);
    assert_eq!(store.verify_chain().unwrap().events, 31);
}

#[test]
fn reopen_continues_the_chain() {
    let dir = TempDir::new("reopen");
    let path = dir.path().join("nested/deeper/audit.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        let mut evs: Vec<_> = (1..=5).map(|i| command_event("a", "alice", i)).collect();
        store.append_events(&mut evs, false).unwrap();
    }
    let store = SqliteStore::open_with(&path, true).unwrap();
    let mut more: Vec<_> = (6..=10).map(|i| command_event("b", "bob", i)).collect();
    store.append_events(&mut more, true).unwrap();
    assert_eq!(more[0].seq, 6);
    let all = store.query_events(&EventFilter::default()).unwrap();
    assert_eq!(more[0].prev_hash, all[4].hash);
    assert_eq!(store.verify_chain().unwrap().events, 10);
    assert!(store.verify_chain().unwrap().problem.is_none());
}

#[test]
fn fsync_batches_switch_to_full_sync() {
    let dir = TempDir::new("sync");
    let store = SqliteStore::open(&dir.path().join("audit.db")).unwrap();
    let sync_level = |s: &SqliteStore| -> i64 {
        lock(&s.writer)
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(sync_level(&store), 1, "NORMAL by default");
    store
        .append_events(&mut [command_event("s", "a", 1)], true)
        .unwrap();
    assert_eq!(sync_level(&store), 2, "FULL for an fsync batch");
    store
        .append_events(&mut [command_event("s", "a", 2)], false)
        .unwrap();
    assert_eq!(sync_level(&store), 1);
    let journal: String = raw(&store)
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
}

#[test]
fn query_filters() {
    let store = SqliteStore::open_in_memory().unwrap();
    let mut evs = Vec::new();
    for i in 1..=10u64 {
        let (session, who) = if i % 2 == 0 {
            ("even", "alice")
        } else {
            ("odd", "bob")
        };
        let mut ev = command_event(session, who, i);
        ev.time_us = 1_000 * i as i64;
        if i == 4 {
            ev.connection = Some("billing".into());
            ev.approval = Some("ap-1".to_string());
        }
        if i == 9 {
            ev.kind = EventKind::SessionEnd;
        }
        evs.push(ev);
    }
    store.append_events(&mut evs, false).unwrap();
    let seqs = |f: EventFilter| -> Vec<u64> {
        store
            .query_events(&f)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect()
    };
    assert_eq!(
        seqs(EventFilter {
            session: Some("even".into()),
            ..Default::default()
        }),
        [2, 4, 6, 8, 10]
    );
    assert_eq!(
        seqs(EventFilter {
            identity: Some("entra/bob".into()),
            ..Default::default()
        }),
        [1, 3, 5, 7, 9]
    );
    assert_eq!(
        seqs(EventFilter {
            identity: Some("bob".into()),
            after_seq: Some(5),
            ..Default::default()
        }),
        [7, 9]
    );
    assert_eq!(
        seqs(EventFilter {
            connection: Some("billing".into()),
            ..Default::default()
        }),
        [4]
    );
    assert_eq!(
        seqs(EventFilter {
            approval: Some("ap-1".into()),
            ..Default::default()
        }),
        [4]
    );
    assert_eq!(
        seqs(EventFilter {
            kind: Some(EventKind::SessionEnd),
            ..Default::default()
        }),
        [9]
    );
    assert_eq!(
        seqs(EventFilter {
            since_us: Some(8_000),
            ..Default::default()
        }),
        [8, 9, 10]
    );
    assert_eq!(
        seqs(EventFilter {
            limit: Some(3),
            ..Default::default()
        }),
        [8, 9, 10]
    );
    assert_eq!(
        seqs(EventFilter {
            session: Some("odd".into()),
            limit: Some(2),
            ..Default::default()
        }),
        [7, 9]
    );
    assert!(
        seqs(EventFilter {
            limit: Some(0),
            ..Default::default()
        })
        .is_empty()
    );
    assert!(
        seqs(EventFilter {
            identity: Some("carol".into()),
            ..Default::default()
        })
        .is_empty()
    );
}

#[test]
fn access_keys_put_get_revoke() {
    let dir = TempDir::new("keys");
    let store = SqliteStore::open(&dir.path().join("audit.db")).unwrap();
    let identity = command_event("s", "alice", 0)
        .identity
        .unwrap()
        .as_ref()
        .clone();
    let key = AccessKeyRecord {
        id: "ak_1".to_string(),
        secret_hash: "ab".repeat(32),
        identity,
        created_us: 5,
        expires_at: 1_000,
        revoked: false,
    };
    store.put_access_key(&key).unwrap();
    assert_eq!(
        store.access_key_by_hash(&key.secret_hash).unwrap(),
        Some(key.clone())
    );
    assert_eq!(store.access_key_by_hash(&"cd".repeat(32)).unwrap(), None);
    assert!(store.put_access_key(&key).is_err(), "duplicate id accepted");
    assert!(store.revoke_access_key("ak_1").unwrap());
    assert!(!store.revoke_access_key("ak_missing").unwrap());
    let got = store.access_key_by_hash(&key.secret_hash).unwrap().unwrap();
    assert!(got.revoked);
    assert_eq!(got.id, "ak_1");
}

/// `n` events chained after `(seq, hash)` and their journal lines, as the audit journal
/// hands them over.
fn chained_after(seq: u64, hash: &str, n: u64) -> (Vec<AuditEvent>, Vec<Vec<u8>>) {
    let mut prev = hash.to_string();
    (seq + 1..=seq + n)
        .map(|s| {
            let mut event = command_event("s1", "alice", s);
            let body = canonical_body(&event).unwrap();
            event.seq = s;
            event.hash = chain_hash(&prev, s, &body);
            event.prev_hash = std::mem::replace(&mut prev, event.hash.clone());
            let mut line = Vec::new();
            push_line(&mut line, &event, &body).unwrap();
            (event, line)
        })
        .unzip()
}

/// `insert_chained` with `events` and their journal `lines` (each ending in a newline).
fn insert(store: &SqliteStore, events: &[AuditEvent], lines: &[Vec<u8>]) -> Result<()> {
    let events: Vec<&AuditEvent> = events.iter().collect();
    let lines: Vec<&str> = lines
        .iter()
        .map(|l| std::str::from_utf8(l).unwrap().trim_end_matches('\n'))
        .collect();
    store.insert_chained(&events, &lines, None)
}

#[test]
fn insert_chained_continues_the_chain_and_refuses_gaps() {
    let dir = TempDir::new("chained");
    let store = store_with(&dir, 3);
    let (seq, hash) = store.last_event().unwrap().unwrap();
    assert_eq!(seq, 3);
    let (batch, lines) = chained_after(seq, &hash, 5);
    // A gap (the first event missing) is refused and nothing is inserted.
    let err = insert(&store, &batch[1..], &lines[1..5]).unwrap_err();
    assert!(err.to_string().contains("does not continue"), "{err}");
    // A wrong link is refused too.
    let mut forged = batch.clone();
    forged[0].prev_hash = "00".repeat(32);
    assert!(insert(&store, &forged, &lines).is_err());
    // Lines that do not match the events in number are refused.
    assert!(insert(&store, &batch, &lines[0..4]).is_err());
    assert_eq!(store.last_event().unwrap().unwrap().0, 3);

    insert(&store, &batch[..2], &lines[..2]).unwrap();
    // Already stored events are skipped, so a retry after an unclear failure is harmless.
    insert(&store, &batch, &lines).unwrap();
    assert_eq!(
        store.verify_chain().unwrap(),
        ChainReport {
            events: 8,
            problem: None
        }
    );
    let stored = store.query_events(&EventFilter::default()).unwrap();
    assert_eq!(stored[7], batch[4]);
    // An event the store holds under another hash is refused.
    let (other, other_lines) = chained_after(7, &"11".repeat(32), 1);
    assert!(insert(&store, &other, &other_lines).is_err());
}
