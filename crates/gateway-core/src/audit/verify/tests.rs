//! The chain checked against its anchors: cut tails, missing segments, rewritten chains and
//! forged anchors are found, and nothing is written while looking.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::audit::anchor::{AnchorFile, AnchorKey, read_anchors};
use crate::audit::tail::journal_tail;
use crate::audit::writer::{Anchoring, Options};
use crate::audit::{AuditLog, journal_dir};
use crate::config::Durability;
use crate::store::SqliteStore;
use crate::store::sqlite::tests::{TempDir, command_event};
use crate::store::sqlite::verify_read_only;

struct Setup {
    dir: TempDir,
}

impl Setup {
    fn new(tag: &str) -> Setup {
        Setup {
            dir: TempDir::new(tag),
        }
    }
    fn db(&self) -> PathBuf {
        self.dir.path().join("portcullis.db")
    }
    fn journal(&self) -> PathBuf {
        journal_dir(self.dir.path())
    }
    fn anchors(&self) -> PathBuf {
        self.dir.path().join("elsewhere/anchors.jsonl")
    }
    fn key(&self) -> AnchorKey {
        AnchorKey::load_or_create(self.dir.path()).unwrap()
    }
    fn anchoring(&self, every: Duration) -> Anchoring {
        Anchoring {
            key: self.key(),
            file: AnchorFile::new(self.anchors()),
            every,
        }
    }
    fn start(&self, every: Duration, segment_bytes: u64) -> crate::error::Result<AuditLog> {
        let store = Arc::new(SqliteStore::open(&self.db()).unwrap());
        let options = Options {
            segment_bytes,
            anchoring: Some(self.anchoring(every)),
            ..Options::default()
        };
        AuditLog::start_with(store, Durability::Process, self.journal(), None, options)
    }
    fn verify(&self) -> Verified {
        self.verify_with(&read_anchors(&self.anchors()).unwrap())
    }
    fn verify_with(&self, anchors: &[Anchor]) -> Verified {
        let key = self.key().public().to_vec();
        verify(
            |p| verify_read_only(&self.db(), p),
            &self.journal(),
            anchors,
            &[key],
        )
        .unwrap()
    }
}

async fn record(log: &AuditLog, n: u64) {
    for i in 0..n {
        log.record(command_event("s1", "alice", i)).await.unwrap();
    }
}

/// Every file under `dir` with its length and modification time.
fn snapshot(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), m.len(), m.modified().unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn shutdown_anchors_the_head_and_verify_matches_it() {
    let s = Setup::new("anchor-shutdown");
    let log = s
        .start(
            Duration::from_secs(3600),
            crate::audit::journal::SEGMENT_BYTES,
        )
        .unwrap();
    record(&log, 5).await;
    log.shutdown().await;
    let anchors = read_anchors(&s.anchors()).unwrap();
    assert_eq!(anchors.len(), 1, "{anchors:?}");
    assert_eq!(anchors[0].seq, 5);
    assert!(anchors[0].signed_by(s.key().public()));
    let v = s.verify();
    assert_eq!(v.problem, None);
    assert_eq!((v.events, v.stored, v.journaled, v.anchors), (5, 5, 0, 1));
    assert_eq!(
        v.head.as_ref().map(|h| h.1.as_str()),
        Some(anchors[0].hash.as_str())
    );

    // A restart with no new events signs nothing new; new events get a new anchor.
    let log = s
        .start(
            Duration::from_secs(3600),
            crate::audit::journal::SEGMENT_BYTES,
        )
        .unwrap();
    log.shutdown().await;
    assert_eq!(read_anchors(&s.anchors()).unwrap().len(), 1);
    let log = s
        .start(
            Duration::from_secs(3600),
            crate::audit::journal::SEGMENT_BYTES,
        )
        .unwrap();
    record(&log, 2).await;
    log.shutdown().await;
    let anchors = read_anchors(&s.anchors()).unwrap();
    assert_eq!(
        anchors.iter().map(|a| a.seq).collect::<Vec<_>>(),
        vec![5, 7]
    );
    assert_eq!(s.verify().problem, None);
}

#[tokio::test]
async fn the_head_is_anchored_at_the_interval_while_running() {
    let s = Setup::new("anchor-interval");
    let log = s
        .start(
            Duration::from_millis(10),
            crate::audit::journal::SEGMENT_BYTES,
        )
        .unwrap();
    record(&log, 3).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let anchored_at = |seq: u64| {
        read_anchors(&s.anchors())
            .unwrap()
            .iter()
            .any(|a| a.seq == seq)
    };
    while !anchored_at(3) {
        assert!(
            std::time::Instant::now() < deadline,
            "no anchor was written"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    record(&log, 2).await;
    while !anchored_at(5) {
        assert!(std::time::Instant::now() < deadline, "no second anchor");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The counter follows the anchor's write.
    while log.stats().anchors < 2 {
        assert!(std::time::Instant::now() < deadline, "anchors not counted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Read while the gateway runs: events may still be only in the journal.
    assert_eq!(s.verify().problem, None);
    log.shutdown().await;
    let v = s.verify();
    assert_eq!(v.problem, None);
    assert_eq!(v.events, 5);
}

/// Five events left in the journal as a crash leaves them, with an anchor at the head.
async fn crashed_with_journal(s: &Setup, segment_bytes: u64) -> Vec<Anchor> {
    let store = Arc::new(SqliteStore::open(&s.db()).unwrap());
    let options = Options {
        segment_bytes,
        ..Options::default()
    };
    let log = AuditLog::start_with(store, Durability::Process, s.journal(), None, options).unwrap();
    record(&log, 5).await;
    log.abandon().await;
    let tail = journal_tail(&s.journal(), 0).unwrap();
    let head = tail.last().unwrap();
    let anchor = s.key().sign(head.seq, &head.hash, 1_700_000_000_000_000);
    AnchorFile::new(s.anchors()).append(&anchor).unwrap();
    vec![anchor]
}

#[tokio::test]
async fn a_cut_journal_tail_is_reported_and_the_gateway_will_not_start_on_it() {
    let s = Setup::new("anchor-cut-journal");
    let anchors = crashed_with_journal(&s, crate::audit::journal::SEGMENT_BYTES).await;
    let before = snapshot(s.dir.path());
    let v = s.verify_with(&anchors);
    assert_eq!(v.problem, None, "{v:?}");
    assert_eq!((v.stored, v.journaled), (0, 5));
    // Nothing written: not the store, not the journal, no SQLite side files.
    assert_eq!(snapshot(s.dir.path()), before);

    // Cut the last line.
    let (_, seg) = list_segments(&s.journal()).unwrap().pop().unwrap();
    let data = std::fs::read(&seg).unwrap();
    // A crash leaves the open segment zero-filled after its last line.
    let data = crate::audit::journal::written(&data);
    let cut = data[..data.len() - 1]
        .iter()
        .rposition(|b| *b == b'\n')
        .unwrap()
        + 1;
    std::fs::write(&seg, &data[..cut]).unwrap();
    let v = s.verify_with(&anchors);
    let (at, what) = v.problem.unwrap();
    assert_eq!(at, 5);
    assert!(
        what.contains("chain ends at event 4") && what.contains("cut from the tail"),
        "{what}"
    );

    let err = s
        .start(
            Duration::from_secs(60),
            crate::audit::journal::SEGMENT_BYTES,
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("events 5 to 5 are missing"),
        "{err}"
    );
}

#[tokio::test]
async fn a_missing_segment_is_reported_at_its_first_event() {
    let s = Setup::new("anchor-segment");
    // One batch per segment.
    let anchors = crashed_with_journal(&s, 1).await;
    let segs = list_segments(&s.journal()).unwrap();
    assert_eq!(segs.len(), 5, "{segs:?}");
    std::fs::remove_file(&segs[2].1).unwrap();
    let (at, what) = s.verify_with(&anchors).problem.unwrap();
    assert_eq!(at, 3);
    assert!(what.contains("event 3 is missing"), "{what}");
}

#[tokio::test]
async fn a_cut_store_tail_is_reported() {
    let s = Setup::new("anchor-cut-store");
    let log = s.start(Duration::from_secs(3600), 1).unwrap();
    record(&log, 5).await;
    log.shutdown().await;
    assert_eq!(s.verify().problem, None);
    // Remove the newest block of events from the index and its lines from the segment, as
    // a DELETE and a truncated file would.
    let conn = rusqlite::Connection::open(s.db()).unwrap();
    let (location, offset): (String, i64) = conn
        .query_row(
            "SELECT s.location, b.seg_offset FROM event_blocks b \
             JOIN event_segments s ON s.id = b.segment ORDER BY b.first_seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let removed = conn
        .execute(
            "DELETE FROM event_blocks WHERE first_seq = (SELECT max(first_seq) FROM event_blocks)",
            [],
        )
        .unwrap();
    assert_eq!(removed, 1);
    drop(conn);
    let segment = s.db().parent().unwrap().join(location);
    std::fs::OpenOptions::new()
        .write(true)
        .open(segment)
        .unwrap()
        .set_len(offset as u64)
        .unwrap();
    let v = s.verify();
    let (at, what) = v.problem.unwrap();
    assert!(at <= 5, "{at}");
    assert!(what.contains("cut from the tail"), "{what}");
}

#[tokio::test]
async fn a_rewritten_chain_and_a_forged_anchor_are_reported() {
    let s = Setup::new("anchor-rewrite");
    let log = s.start(Duration::from_secs(3600), 1).unwrap();
    record(&log, 5).await;
    log.shutdown().await;
    let anchors = read_anchors(&s.anchors()).unwrap();

    // The same number of events, chained correctly, with other content.
    let forged = Setup::new("anchor-rewrite-2");
    let store = Arc::new(SqliteStore::open(&forged.db()).unwrap());
    let log = AuditLog::start(store, Durability::Process, forged.journal(), None).unwrap();
    for i in 0..5 {
        log.record(command_event("s1", "mallory", i)).await.unwrap();
    }
    log.shutdown().await;
    let v = verify(
        |p| verify_read_only(&forged.db(), p),
        &forged.journal(),
        &anchors,
        &[s.key().public().to_vec()],
    )
    .unwrap();
    let (at, what) = v.problem.unwrap();
    assert_eq!(at, 5);
    assert_eq!(anchors.len(), 1);
    assert!(what.contains("does not match the anchor"), "{what}");

    // An anchor signed with another key does not vouch for anything.
    let other = AnchorKey::load_or_create(forged.dir.path()).unwrap();
    let head = v.head.unwrap();
    let fake = other.sign(head.0, &head.1, 1);
    let v = verify(
        |p| verify_read_only(&forged.db(), p),
        &forged.journal(),
        &[fake],
        &[s.key().public().to_vec()],
    )
    .unwrap();
    let (_, what) = v.problem.unwrap();
    assert!(
        what.contains("does not verify with the anchor key"),
        "{what}"
    );
}
