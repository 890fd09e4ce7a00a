//! Tests of the group-committing writer, the journal behind it and the indexer.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc as std_mpsc;

use super::*;
use crate::audit::event::EventFilter;
use crate::audit::journal::{list_segments, recover_journal, segment_path};
use crate::store::sqlite::tests::{TempDir, command_event};
use crate::store::{AccessKeyRecord, ChainReport, SqliteStore};

fn db(dir: &TempDir) -> PathBuf {
    dir.path().join("audit.db")
}

fn jdir(dir: &TempDir) -> PathBuf {
    dir.path().join("audit-journal")
}

fn intact(events: u64) -> ChainReport {
    ChainReport {
        events,
        problem: None,
    }
}

/// A store whose `insert_chained` fails while `broken` is set.
struct FlakyStore {
    inner: SqliteStore,
    broken: AtomicBool,
}

impl FlakyStore {
    fn new(inner: SqliteStore, broken: bool) -> Arc<FlakyStore> {
        Arc::new(FlakyStore {
            inner,
            broken: AtomicBool::new(broken),
        })
    }
}

impl Store for FlakyStore {
    fn append_events(&self, events: &mut [AuditEvent], fsync: bool) -> Result<()> {
        self.inner.append_events(events, fsync)
    }
    fn insert_chained(
        &self,
        events: &[&AuditEvent],
        lines: &[&str],
        at: Option<crate::store::SegmentAt<'_>>,
    ) -> Result<()> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(Error::Store("disk I/O error".to_string()));
        }
        self.inner.insert_chained(events, lines, at)
    }
    fn last_event(&self) -> Result<Option<(u64, String)>> {
        self.inner.last_event()
    }
    fn query_events(&self, f: &EventFilter) -> Result<Vec<AuditEvent>> {
        self.inner.query_events(f)
    }
    fn verify_chain(&self) -> Result<ChainReport> {
        self.inner.verify_chain()
    }
    fn put_access_key(&self, k: &AccessKeyRecord) -> Result<()> {
        self.inner.put_access_key(k)
    }
    fn access_key_by_hash(&self, h: &str) -> Result<Option<AccessKeyRecord>> {
        self.inner.access_key_by_hash(h)
    }
    fn revoke_access_key(&self, id: &str) -> Result<bool> {
        self.inner.revoke_access_key(id)
    }
}

/// Wait (without a clock) until the indexer has done what `done` checks.
async fn until(log: &AuditLog, done: impl Fn(&AuditStats) -> bool) {
    while !done(&log.stats()) {
        tokio::task::yield_now().await;
        std::thread::yield_now();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_records_get_distinct_seqs_and_share_writes() {
    let dir = TempDir::new("writer-concurrent");
    let store = Arc::new(SqliteStore::open(&db(&dir)).unwrap());
    let log = AuditLog::start(store.clone(), Durability::Process, jdir(&dir), None).unwrap();
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..500u64 {
                let ev = command_event(&format!("s{t}"), "alice", t * 1000 + i);
                seqs.push(log.record(ev).await.unwrap());
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let seqs = t.await.unwrap();
        // One session's events keep their order in the chain.
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        all.extend(seqs);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=2000).collect::<Vec<u64>>());
    let stats = log.stats();
    assert_eq!(stats.events, 2000);
    // A record whose event another one already wrote does not write again.
    assert!(stats.batches <= 2000, "{stats:?}");
    assert_eq!(stats.failed_batches, 0);
    log.shutdown().await;
    let stats = log.stats();
    assert_eq!((stats.indexed, stats.journal_lag), (2000, 0), "{stats:?}");
    assert_eq!(store.verify_chain().unwrap(), intact(2000));
    // The segments are the archive: the store points into them.
    assert!(!list_segments(&jdir(&dir)).unwrap().is_empty());
    assert_eq!(
        store.query_events(&EventFilter::default()).unwrap().len(),
        2000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_queued_together_share_one_write_in_order() {
    let dir = TempDir::new("writer-batch");
    let (gate_tx, gate_rx) = std_mpsc::channel();
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let options = Options {
        start_gate: Some(gate_rx),
        ..Options::default()
    };
    // Group commit is the `write` journal's (fsync mode); a mapped one writes as it stages.
    let log =
        AuditLog::start_with(store.clone(), Durability::Fsync, jdir(&dir), None, options).unwrap();
    // The flusher is held at its gate: queued events wait for the next waited-for write,
    // which takes them along, in order, in the same append.
    for i in 0..=100 {
        log.record_later(command_event("s", "a", i)).await.unwrap();
    }
    assert_eq!(log.stats().queued, 101);
    assert_eq!(log.record(command_event("s", "a", 101)).await.unwrap(), 102);
    gate_tx.send(()).unwrap();
    log.shutdown().await;
    let stats = log.stats();
    assert_eq!((stats.events, stats.batches), (102, 1), "{stats:?}");
    let stored = store.query_events(&EventFilter::default()).unwrap();
    let statements: Vec<String> = stored.into_iter().filter_map(|e| e.statement).collect();
    let expected: Vec<String> = (0..=101).map(|i| format!("select {i}")).collect();
    assert_eq!(statements, expected, "queue order not kept");
}

#[tokio::test]
async fn record_returns_only_once_the_event_is_in_the_journal() {
    let dir = TempDir::new("writer-durable");
    // The store takes nothing, so the journal is the only place the event can be.
    let store = FlakyStore::new(SqliteStore::open_in_memory().unwrap(), true);
    let log = AuditLog::start(store, Durability::Process, jdir(&dir), None).unwrap();
    let seq = log.record(command_event("s", "a", 42)).await.unwrap();
    // The open segment is zero-filled after its last line.
    let data = std::fs::read(segment_path(&jdir(&dir), 1)).unwrap();
    let text = std::str::from_utf8(crate::audit::journal::written(&data)).unwrap();
    let ev: AuditEvent = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!((ev.seq, ev.statement.as_deref()), (seq, Some("select 42")));
    log.abandon().await;
}

#[tokio::test]
async fn store_failure_does_not_fail_records_and_events_are_stored_later() {
    let dir = TempDir::new("writer-flaky");
    let store = FlakyStore::new(SqliteStore::open(&db(&dir)).unwrap(), false);
    let log = AuditLog::start(store.clone(), Durability::Fsync, jdir(&dir), None).unwrap();
    assert_eq!(log.record(command_event("s", "a", 1)).await.unwrap(), 1);
    until(&log, |s| s.indexed == 1).await;
    store.broken.store(true, Ordering::SeqCst);
    assert_eq!(log.record(command_event("s", "a", 2)).await.unwrap(), 2);
    log.record_all(vec![command_event("s", "a", 3), command_event("s", "a", 4)])
        .await
        .unwrap();
    until(&log, |s| s.index_failures > 0).await;
    assert_eq!(store.inner.verify_chain().unwrap(), intact(1));
    store.broken.store(false, Ordering::SeqCst);
    assert_eq!(log.record(command_event("s", "a", 5)).await.unwrap(), 5);
    log.shutdown().await;
    let stats = log.stats();
    assert_eq!((stats.events, stats.failed_batches), (5, 0), "{stats:?}");
    assert_eq!((stats.indexed, stats.journal_lag), (5, 0), "{stats:?}");
    assert_eq!(store.verify_chain().unwrap(), intact(5));
}

/// A writer on `durability` with one batch per segment whose first record is written and
/// whose second segment cannot be created (a directory holds its name, whoever runs the
/// test), so the second record fails; the blocker's path, to remove it.
async fn second_segment_blocked(
    dir: &TempDir,
    durability: Durability,
) -> (Arc<SqliteStore>, AuditLog, PathBuf) {
    let store = Arc::new(SqliteStore::open(&db(dir)).unwrap());
    let options = Options {
        segment_bytes: 1,
        ..Options::default()
    };
    let log = AuditLog::start_with(store.clone(), durability, jdir(dir), None, options).unwrap();
    assert_eq!(log.record(command_event("s", "a", 1)).await.unwrap(), 1);
    let blocker = segment_path(&jdir(dir), 2);
    std::fs::create_dir(&blocker).unwrap();
    let err = log.record(command_event("s", "a", 2)).await.unwrap_err();
    assert!(
        matches!(err, Error::Audit(ref m) if m.contains("audit journal")),
        "{err}"
    );
    (store, log, blocker)
}

#[tokio::test]
async fn journal_write_failure_fails_the_waiters_and_the_writer_recovers() {
    let dir = TempDir::new("writer-jfail");
    // The `write` journal (fsync mode).
    let (store, log, blocker) = second_segment_blocked(&dir, Durability::Fsync).await;
    // Until a write succeeds no new command is staged: it would run unrecorded.
    let err = log
        .record_all(vec![command_event("s", "a", 3), command_event("s", "a", 4)])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("audit is unavailable"), "{err}");
    assert!(log.stage(vec![command_event("s", "a", 3)]).is_err());
    // Events nobody waits for are still kept, behind the failed one.
    log.record_later(command_event("s", "a", 6)).await.unwrap();
    std::fs::remove_dir(&blocker).unwrap();
    // The flusher retries; the failed event is written first, in its place in the chain.
    until(&log, |s| s.events == 3).await;
    assert_eq!(log.record(command_event("s", "a", 5)).await.unwrap(), 4);
    log.shutdown().await;
    let stats = log.stats();
    assert_eq!(stats.events, 4, "{stats:?}");
    assert!(stats.failed_batches >= 1, "{stats:?}");
    assert_eq!(store.verify_chain().unwrap(), intact(4));
    let stored = store.query_events(&EventFilter::default()).unwrap();
    let statements: Vec<&str> = stored
        .iter()
        .filter_map(|e| e.statement.as_deref())
        .collect();
    assert_eq!(statements, ["select 1", "select 2", "select 6", "select 5"]);
}

#[tokio::test]
async fn a_mapped_journal_that_cannot_open_a_segment_refuses_commands_and_recovers() {
    let dir = TempDir::new("writer-mfail");
    let (store, log, blocker) = second_segment_blocked(&dir, Durability::Process).await;
    // A command whose event cannot be written is refused, and its event is not kept: it
    // never ran. Each stage tries again.
    let err = log
        .record_all(vec![command_event("s", "a", 3), command_event("s", "a", 4)])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("audit is unavailable"), "{err}");
    assert!(log.stage(vec![command_event("s", "a", 3)]).is_err());
    // Events nobody waits for are kept until the journal takes them.
    log.record_later(command_event("s", "a", 6)).await.unwrap();
    assert_eq!(log.stats().events, 1);
    std::fs::remove_dir(&blocker).unwrap();
    // The flusher retries; the kept event goes in its place in the chain.
    until(&log, |s| s.events == 2).await;
    assert_eq!(log.record(command_event("s", "a", 5)).await.unwrap(), 3);
    log.shutdown().await;
    let stats = log.stats();
    assert_eq!(stats.events, 3, "{stats:?}");
    assert!(stats.failed_batches >= 1, "{stats:?}");
    assert_eq!(store.verify_chain().unwrap(), intact(3));
    let stored = store.query_events(&EventFilter::default()).unwrap();
    let statements: Vec<&str> = stored
        .iter()
        .filter_map(|e| e.statement.as_deref())
        .collect();
    assert_eq!(statements, ["select 1", "select 6", "select 5"]);
}

#[tokio::test]
async fn staged_events_are_written_together_by_the_first_flush() {
    let dir = TempDir::new("writer-stage");
    let (gate_tx, gate_rx) = std_mpsc::channel();
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let options = Options {
        start_gate: Some(gate_rx),
        ..Options::default()
    };
    // The `write` journal (fsync mode): staging does not write, the first flush does.
    let log = AuditLog::start_with(store, Durability::Fsync, jdir(&dir), None, options).unwrap();
    // Two sessions stage their commands; neither is written yet.
    let a = log.stage(vec![command_event("s1", "a", 1)]).unwrap();
    let b = log
        .stage(vec![
            command_event("s2", "b", 2),
            command_event("s2", "b", 3),
        ])
        .unwrap();
    assert_eq!((a, b), (1, 3));
    assert!(!log.is_durable(a));
    let seg = segment_path(&jdir(&dir), 1);
    assert!(!seg.exists());
    // The first session to need its event written writes both sessions' events at once.
    log.flush(a).unwrap();
    assert!(log.is_durable(b));
    log.flush(b).unwrap();
    let stats = log.stats();
    assert_eq!((stats.events, stats.batches), (3, 1), "{stats:?}");
    assert_eq!(std::fs::read_to_string(&seg).unwrap().lines().count(), 3);
    gate_tx.send(()).unwrap();
    log.shutdown().await;
}

#[tokio::test]
async fn acked_events_survive_a_crash_and_the_chain_continues() {
    let dir = TempDir::new("writer-crash");
    let store = FlakyStore::new(SqliteStore::open(&db(&dir)).unwrap(), false);
    let log = AuditLog::start(store.clone(), Durability::Process, jdir(&dir), None).unwrap();
    for i in 1..=5 {
        log.record(command_event("s", "a", i)).await.unwrap();
    }
    until(&log, |s| s.indexed == 5).await;
    store.broken.store(true, Ordering::SeqCst);
    for i in 6..=10 {
        log.record(command_event("s", "a", i)).await.unwrap();
    }
    // Killed: nothing more reaches the store.
    log.abandon().await;
    drop(log);
    drop(store);

    let store = Arc::new(SqliteStore::open(&db(&dir)).unwrap());
    assert_eq!(store.verify_chain().unwrap(), intact(5));
    assert_eq!(
        recover_journal(store.as_ref(), &jdir(&dir)).unwrap(),
        10 - 5
    );
    assert_eq!(store.verify_chain().unwrap(), intact(10));
    assert!(!list_segments(&jdir(&dir)).unwrap().is_empty());
    // Nothing left to recover the second time.
    assert_eq!(recover_journal(store.as_ref(), &jdir(&dir)).unwrap(), 0);

    let log = AuditLog::start(store.clone(), Durability::Process, jdir(&dir), None).unwrap();
    assert_eq!(log.record(command_event("s", "a", 11)).await.unwrap(), 11);
    log.shutdown().await;
    assert_eq!(store.verify_chain().unwrap(), intact(11));
}

#[tokio::test]
async fn a_copy_into_the_map_cut_short_end_first_is_cut_at_start() {
    let dir = TempDir::new("writer-torn-map");
    let store = FlakyStore::new(SqliteStore::open(&db(&dir)).unwrap(), true);
    let log = AuditLog::start(store.clone(), Durability::Process, jdir(&dir), None).unwrap();
    for i in 1..=3 {
        log.record(command_event("s", "a", i)).await.unwrap();
    }
    log.abandon().await;
    // The crash stopped a copy that had stored the end of its line (and a newline) but not
    // its start: zeros, then the rest of a line, inside the segment's zero fill.
    let seg = segment_path(&jdir(&dir), 1);
    let data = std::fs::read(&seg).unwrap();
    let end = crate::audit::journal::written(&data).len();
    assert!(data.len() > end + 100, "the open segment is zero-filled");
    let mut f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(end as u64 + 40)).unwrap();
    std::io::Write::write_all(&mut f, b"\"prev_hash\":\"ab\",\"hash\":\"cd\"}\n").unwrap();
    drop(f);

    store.broken.store(false, Ordering::SeqCst);
    let log = AuditLog::start(store.clone(), Durability::Process, jdir(&dir), None).unwrap();
    assert_eq!(store.verify_chain().unwrap(), intact(3));
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        end as u64,
        "cut at the zero fill"
    );
    assert_eq!(log.record(command_event("s", "a", 4)).await.unwrap(), 4);
    log.shutdown().await;
    assert_eq!(store.verify_chain().unwrap(), intact(4));
}

#[tokio::test]
async fn start_recovers_the_journal_and_cuts_a_torn_line() {
    let dir = TempDir::new("writer-torn");
    let store = FlakyStore::new(SqliteStore::open(&db(&dir)).unwrap(), true);
    let log = AuditLog::start(store.clone(), Durability::Process, jdir(&dir), None).unwrap();
    for i in 1..=3 {
        log.record(command_event("s", "a", i)).await.unwrap();
    }
    log.abandon().await;
    // A write cut short by the crash: never acknowledged.
    let seg = segment_path(&jdir(&dir), 1);
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    std::io::Write::write_all(&mut f, b"{\"seq\":4,\"time_us\":17").unwrap();
    drop(f);

    store.broken.store(false, Ordering::SeqCst);
    let log = AuditLog::start(store.clone(), Durability::Process, jdir(&dir), None).unwrap();
    assert_eq!(store.verify_chain().unwrap(), intact(3));
    assert_eq!(log.record(command_event("s", "a", 4)).await.unwrap(), 4);
    log.shutdown().await;
    assert_eq!(store.verify_chain().unwrap(), intact(4));
    let stored = store.query_events(&EventFilter::default()).unwrap();
    assert_eq!(stored[3].statement.as_deref(), Some("select 4"));
}

#[tokio::test]
async fn segments_rotate_and_stay_as_the_archive_the_store_points_into() {
    let dir = TempDir::new("writer-rotate");
    let store = FlakyStore::new(SqliteStore::open(&db(&dir)).unwrap(), true);
    let options = Options {
        segment_bytes: 1,
        ..Options::default()
    };
    let log = AuditLog::start_with(
        store.clone(),
        Durability::Process,
        jdir(&dir),
        None,
        options,
    )
    .unwrap();
    for i in 1..=4 {
        log.record(command_event("s", "a", i)).await.unwrap();
    }
    let firsts = || -> Vec<u64> {
        list_segments(&jdir(&dir))
            .unwrap()
            .into_iter()
            .map(|(first, _)| first)
            .collect()
    };
    assert_eq!(firsts(), vec![1, 2, 3, 4], "one segment per batch");
    store.broken.store(false, Ordering::SeqCst);
    log.record(command_event("s", "a", 5)).await.unwrap();
    until(&log, |s| s.indexed == 5).await;
    log.shutdown().await;
    // Every segment stays; the store holds where each block lies, not a copy of its lines.
    assert_eq!(firsts(), vec![1, 2, 3, 4, 5]);
    assert_eq!(store.verify_chain().unwrap(), intact(5));
    let conn = rusqlite::Connection::open(db(&dir)).unwrap();
    let (copied, placed): (i64, i64) = conn
        .query_row(
            "SELECT sum(lines != ''), sum(segment IS NOT NULL) FROM event_blocks",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((copied, placed > 0), (0, true));
    let stored = store.query_events(&EventFilter::default()).unwrap();
    let statements: Vec<_> = stored.iter().map(|e| e.statement.clone()).collect();
    assert_eq!(statements.len(), 5);
    assert_eq!(stored[2].statement.as_deref(), Some("select 3"));
    // A segment removed from the archive is reported, not skipped.
    std::fs::remove_file(segment_path(&jdir(&dir), 3)).unwrap();
    let report = store.verify_chain().unwrap();
    let (at, what) = report.problem.unwrap();
    assert_eq!((at, report.events), (3, 2), "{what}");
    assert!(what.contains("removed?"), "{what}");
    assert!(store.query_events(&EventFilter::default()).is_err());
}

#[tokio::test]
async fn batches_kept_while_the_store_fails_are_stored_in_order_across_transactions() {
    let dir = TempDir::new("writer-parts");
    let store = FlakyStore::new(SqliteStore::open(&db(&dir)).unwrap(), true);
    let log = AuditLog::start(store.clone(), Durability::Process, jdir(&dir), None).unwrap();
    // Two batches that together exceed one store transaction, then small ones: the first
    // transaction ends inside the second batch, the next takes up where it ended.
    let batch = |from: u64, n: u64| {
        (from..from + n)
            .map(|i| command_event("s", "a", i))
            .collect()
    };
    log.record_all(batch(1, 6_000)).await.unwrap();
    log.record_all(batch(6_001, 6_000)).await.unwrap();
    for i in 12_001..=12_005 {
        log.record(command_event("s", "a", i)).await.unwrap();
    }
    until(&log, |s| s.index_failures > 0).await;
    store.broken.store(false, Ordering::SeqCst);
    until(&log, |s| s.indexed == 12_005).await;
    log.shutdown().await;
    assert_eq!(store.verify_chain().unwrap(), intact(12_005));
    let stored = store.query_events(&EventFilter::default()).unwrap();
    assert_eq!(stored.len(), 12_005);
    for (i, ev) in stored.iter().enumerate() {
        let n = i as u64 + 1;
        assert_eq!(ev.seq, n);
        assert_eq!(
            ev.statement.as_deref(),
            Some(format!("select {n}").as_str())
        );
    }
}

#[tokio::test]
async fn a_second_writer_on_the_same_journal_is_refused_and_recovery_skips_it() {
    let dir = TempDir::new("writer-lock");
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let log = AuditLog::start(store.clone(), Durability::Process, jdir(&dir), None).unwrap();
    log.record(command_event("s", "a", 1)).await.unwrap();
    // The running writer owns the journal: recovery from outside leaves it alone.
    assert_eq!(recover_journal(store.as_ref(), &jdir(&dir)).unwrap(), 0);
    log.shutdown().await;
    assert_eq!(store.verify_chain().unwrap(), intact(1));
}

#[tokio::test]
async fn record_after_shutdown_fails() {
    let dir = TempDir::new("writer-stop");
    let log = AuditLog::start(
        Arc::new(SqliteStore::open_in_memory().unwrap()),
        Durability::Process,
        jdir(&dir),
        None,
    )
    .unwrap();
    log.record_later(command_event("s", "a", 1)).await.unwrap();
    log.shutdown().await;
    assert_eq!(log.stats().events, 1, "queued event lost at shutdown");
    assert_eq!(
        log.stats().indexed,
        1,
        "queued event not stored at shutdown"
    );
    assert!(log.record(command_event("s", "a", 2)).await.is_err());
    assert!(log.record_later(command_event("s", "a", 3)).await.is_err());
    log.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_has_one_line_per_event_with_the_stored_hash() {
    let dir = TempDir::new("writer-jsonl");
    let store = Arc::new(SqliteStore::open(&db(&dir)).unwrap());
    let jsonl = dir.path().join("audit.jsonl");
    let log = AuditLog::start(
        store.clone(),
        Durability::Fsync,
        jdir(&dir),
        Some(jsonl.clone()),
    )
    .unwrap();
    for i in 0..30 {
        log.record_later(command_event("s", "a", i)).await.unwrap();
    }
    log.record_all((30..50).map(|i| command_event("s", "b", i)).collect())
        .await
        .unwrap();
    log.shutdown().await;
    let stored = store.query_events(&EventFilter::default()).unwrap();
    assert_eq!(stored.len(), 50);
    let text = std::fs::read_to_string(&jsonl).unwrap();
    let lines: Vec<AuditEvent> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, stored);
    assert_eq!(log.stats().jsonl_failures, 0);
}
