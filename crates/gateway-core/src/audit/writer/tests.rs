//! Tests of the group-committing writer.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc as std_mpsc;

use super::*;
use crate::audit::event::EventFilter;
use crate::store::sqlite::tests::{TempDir, command_event};
use crate::store::{AccessKeyRecord, ChainReport, SqliteStore};

fn file_store(dir: &TempDir) -> Arc<SqliteStore> {
    Arc::new(SqliteStore::open(&dir.path().join("audit.db")).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_records_get_distinct_seqs_and_share_commits() {
    let dir = TempDir::new("writer-concurrent");
    let store = file_store(&dir);
    let log = AuditLog::start(store.clone(), Durability::Process, None).unwrap();
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
    assert!(stats.batches < 2000, "no group commit: {stats:?}");
    assert_eq!(stats.failed_batches, 0);
    log.shutdown().await;
    assert_eq!(
        store.verify_chain().unwrap(),
        ChainReport {
            events: 2000,
            problem: None
        }
    );
}

/// A store whose first append blocks until the test lets it go.
struct GateStore {
    inner: SqliteStore,
    entered: Mutex<Option<std_mpsc::Sender<()>>>,
    release: Mutex<Option<std_mpsc::Receiver<()>>>,
}

impl Store for GateStore {
    fn append_events(&self, events: &mut [AuditEvent], fsync: bool) -> Result<()> {
        let entered = self.entered.lock().unwrap().take();
        if let Some(entered) = entered {
            entered.send(()).unwrap();
            let release = self.release.lock().unwrap().take().unwrap();
            release.recv().unwrap();
        }
        self.inner.append_events(events, fsync)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_queued_during_a_commit_share_the_next_one() {
    let (entered_tx, entered_rx) = std_mpsc::channel();
    let (release_tx, release_rx) = std_mpsc::channel();
    let store = Arc::new(GateStore {
        inner: SqliteStore::open_in_memory().unwrap(),
        entered: Mutex::new(Some(entered_tx)),
        release: Mutex::new(Some(release_rx)),
    });
    let log = AuditLog::start(store.clone(), Durability::Process, None).unwrap();
    log.record_later(command_event("s", "a", 0)).await.unwrap();
    tokio::task::spawn_blocking(move || entered_rx.recv().unwrap())
        .await
        .unwrap();
    for i in 1..=100 {
        log.record_later(command_event("s", "a", i)).await.unwrap();
    }
    let last = {
        let log = log.clone();
        tokio::spawn(async move { log.record(command_event("s", "a", 101)).await })
    };
    // Let the waiting `record` reach the queue before the gate opens.
    while log.stats().queued < 101 {
        tokio::task::yield_now().await;
    }
    release_tx.send(()).unwrap();
    assert_eq!(last.await.unwrap().unwrap(), 102);
    log.shutdown().await;
    let stats = log.stats();
    assert_eq!((stats.events, stats.batches), (102, 2), "{stats:?}");
    let stored = store.query_events(&EventFilter::default()).unwrap();
    let statements: Vec<String> = stored.into_iter().filter_map(|e| e.statement).collect();
    let expected: Vec<String> = (0..=101).map(|i| format!("select {i}")).collect();
    assert_eq!(statements, expected, "queue order not kept");
}

/// A store that fails while `broken` is set.
struct FlakyStore {
    inner: SqliteStore,
    broken: AtomicBool,
}

impl Store for FlakyStore {
    fn append_events(&self, events: &mut [AuditEvent], fsync: bool) -> Result<()> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(Error::Store("disk I/O error".to_string()));
        }
        self.inner.append_events(events, fsync)
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

#[tokio::test]
async fn store_failure_fails_the_waiters_and_the_writer_recovers() {
    let store = Arc::new(FlakyStore {
        inner: SqliteStore::open_in_memory().unwrap(),
        broken: AtomicBool::new(false),
    });
    let log = AuditLog::start(store.clone(), Durability::Fsync, None).unwrap();
    assert_eq!(log.record(command_event("s", "a", 1)).await.unwrap(), 1);
    store.broken.store(true, Ordering::SeqCst);
    let err = log.record(command_event("s", "a", 2)).await.unwrap_err();
    assert!(
        matches!(err, Error::Audit(ref m) if m.contains("disk I/O error")),
        "{err}"
    );
    assert!(
        log.record_all(vec![command_event("s", "a", 3), command_event("s", "a", 4)])
            .await
            .is_err()
    );
    store.broken.store(false, Ordering::SeqCst);
    assert_eq!(log.record(command_event("s", "a", 5)).await.unwrap(), 2);
    let stats = log.stats();
    assert_eq!(stats.failed_batches, 2);
    assert_eq!(stats.failed_events, 3);
    assert_eq!(stats.events, 2);
    log.shutdown().await;
}

#[tokio::test]
async fn record_returns_only_once_the_event_is_in_the_file() {
    let dir = TempDir::new("writer-durable");
    let store = file_store(&dir);
    let log = AuditLog::start(store, Durability::Process, None).unwrap();
    let seq = log.record(command_event("s", "a", 42)).await.unwrap();
    // A separate connection, as a process started after a kill would open it.
    let conn = rusqlite::Connection::open(dir.path().join("audit.db")).unwrap();
    let body: String = conn
        .query_row(
            "SELECT body FROM events WHERE seq = ?1",
            [seq as i64],
            |r| r.get(0),
        )
        .unwrap();
    assert!(body.contains("select 42"));
    log.shutdown().await;
}

#[tokio::test]
async fn record_after_shutdown_fails() {
    let log = AuditLog::start(
        Arc::new(SqliteStore::open_in_memory().unwrap()),
        Durability::Process,
        None,
    )
    .unwrap();
    log.record_later(command_event("s", "a", 1)).await.unwrap();
    log.shutdown().await;
    assert_eq!(log.stats().events, 1, "queued event lost at shutdown");
    assert!(log.record(command_event("s", "a", 2)).await.is_err());
    assert!(log.record_later(command_event("s", "a", 3)).await.is_err());
    log.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_has_one_line_per_event_with_the_stored_hash() {
    let dir = TempDir::new("writer-jsonl");
    let store = file_store(&dir);
    let jsonl = dir.path().join("audit.jsonl");
    let log = AuditLog::start(store.clone(), Durability::Fsync, Some(jsonl.clone())).unwrap();
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
