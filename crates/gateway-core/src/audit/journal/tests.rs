//! Tests of the journal's line format and its writer.

use super::*;
use crate::audit::chain::GENESIS_HASH;
use crate::audit::event::EventKind;
use crate::event::AuditEvent;
use crate::event::chain::{canonical_body, chain_hash};
use crate::event::line::splice_body;
use crate::store::sqlite::tests::{TempDir, command_event};

/// An event chained after `prev` at `seq`, with its canonical body.
struct Chained {
    event: AuditEvent,
    body: String,
}

fn chained(mut ev: AuditEvent, seq: u64, prev: &str) -> Chained {
    let body = canonical_body(&ev).unwrap();
    ev.seq = seq;
    ev.prev_hash = prev.to_string();
    ev.hash = chain_hash(prev, seq, &body);
    Chained { event: ev, body }
}

/// An event whose content looks like the chain fields, to trip up the splicing.
fn awkward_event() -> AuditEvent {
    let mut ev = command_event("s\"1", "al\\ice", 7);
    ev.statement = Some("select '\",\"prev_hash\":\"x' -- \n é".to_string());
    ev.detail = Some(serde_json::json!({"a": 1, "prev_hash": "", "hash": ""}));
    ev
}

#[test]
fn line_is_the_full_event_json_and_parses_back_to_its_body() {
    for ev in [
        awkward_event(),
        AuditEvent::new(EventKind::Policy, ""),
        command_event("s", "a", 1),
    ] {
        let c = chained(ev, 12345, GENESIS_HASH);
        let mut buf = Vec::new();
        push_line(&mut buf, &c.event, &c.body).unwrap();
        let expected = format!("{}\n", serde_json::to_string(&c.event).unwrap());
        assert_eq!(String::from_utf8(buf.clone()).unwrap(), expected);
        let back = parse_line(&buf[..buf.len() - 1]).unwrap();
        assert_eq!(back, c.event);
        let line = std::str::from_utf8(&buf[..buf.len() - 1]).unwrap();
        assert_eq!(splice_body(line).as_deref(), Some(c.body.as_str()));
    }
}

#[test]
fn a_line_that_does_not_match_its_hash_is_refused() {
    let c = chained(command_event("s", "a", 1), 1, GENESIS_HASH);
    let mut buf = Vec::new();
    push_line(&mut buf, &c.event, &c.body).unwrap();
    let edited = String::from_utf8(buf)
        .unwrap()
        .replace("select 1", "select 2");
    let err = parse_line(edited.trim_end().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("does not match its hash"), "{err}");
    assert!(parse_line(b"{\"seq\":1,\"ti").is_err());
}

#[test]
fn writer_appends_batches_and_rotates() {
    let dir = TempDir::new("journal-rotate");
    let line = |seq: u64| {
        let c = chained(command_event("s", "a", seq), seq, GENESIS_HASH);
        let mut buf = Vec::new();
        push_line(&mut buf, &c.event, &c.body).unwrap();
        buf
    };
    let mut two = line(1);
    two.extend(line(2));
    // A segment is closed once it holds as much as the first batch.
    let mut w = JournalWriter::new(dir.path(), two.len() as u64, false);
    let at = w.append(1, &two).unwrap();
    assert_eq!((&*at.path, at.offset), (&*segment_path(dir.path(), 1), 0));
    let three = line(3);
    // Past the size limit: a new segment, named by its first event.
    let at = w.append(3, &three).unwrap();
    assert_eq!((&*at.path, at.offset), (&*segment_path(dir.path(), 3), 0));
    let four = line(4);
    let at = w.append(4, &four).unwrap();
    assert_eq!(
        (&*at.path, at.offset),
        (&*segment_path(dir.path(), 3), three.len() as u64)
    );
    assert_eq!(std::fs::read(segment_path(dir.path(), 1)).unwrap(), two);
    assert_eq!(
        std::fs::read(segment_path(dir.path(), 3)).unwrap(),
        [three, four].concat()
    );
    let firsts: Vec<u64> = list_segments(dir.path())
        .unwrap()
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    assert_eq!(firsts, vec![1, 3]);
}

#[test]
fn one_lock_holder_at_a_time() {
    let dir = TempDir::new("journal-lock");
    let held = lock_dir(dir.path(), false).unwrap();
    assert!(held.is_some());
    assert!(lock_dir(dir.path(), false).unwrap().is_none());
    drop(held);
    assert!(lock_dir(dir.path(), false).unwrap().is_some());
}
