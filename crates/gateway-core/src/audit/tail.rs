//! Reading the newest events: those already stored, plus those still only in the journal
//! (written and durable, not yet indexed into the store by a running gateway).

use std::path::{Path, PathBuf};

use super::event::{AuditEvent, EventFilter};
use super::journal::{list_segments, parse_line, written};
use crate::error::Result;
use crate::store::{ChainReport, Store};

/// Events in the journal after `after_seq`, in order. A torn last line (a write in
/// progress) is left out; it was never acknowledged.
pub fn journal_tail(dir: &Path, after_seq: u64) -> Result<Vec<AuditEvent>> {
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    let segments = list_segments(dir)?;
    for (i, (_, path)) in segments.iter().enumerate() {
        // Every event of this segment is before the next one's first.
        if segments
            .get(i + 1)
            .is_some_and(|(next, _)| *next <= after_seq + 1)
        {
            continue;
        }
        let data = match std::fs::read(path) {
            Ok(d) => d,
            // Indexed and deleted between listing and reading.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        for line in written(&data).split_inclusive(|b| *b == b'\n') {
            let Some(line) = line.strip_suffix(b"\n") else {
                break;
            };
            let event = parse_line(line)?;
            if event.seq > after_seq {
                out.push(event);
            }
        }
    }
    Ok(out)
}

impl EventFilter {
    /// Whether `ev` passes every field of the filter except `limit`.
    pub fn matches(&self, ev: &AuditEvent) -> bool {
        let principal = ev.identity.as_ref();
        self.session.as_ref().is_none_or(|s| *s == ev.session)
            && self
                .identity
                .as_ref()
                .is_none_or(|i| principal.is_some_and(|p| p.principal == *i || p.subject == *i))
            && self
                .connection
                .as_ref()
                .is_none_or(|c| ev.connection.as_deref() == Some(c.as_str()))
            && self.kind.is_none_or(|k| k == ev.kind)
            && self
                .approval
                .as_ref()
                .is_none_or(|a| ev.approval.as_ref() == Some(a))
            && self.after_seq.is_none_or(|s| ev.seq > s)
            && self.since_us.is_none_or(|t| ev.time_us >= t)
    }
}

/// A store seen together with the journal in front of it: queries include events a running
/// gateway has made durable but not yet indexed.
pub struct WithJournal<S> {
    pub store: S,
    pub journal: PathBuf,
}

impl<S: Store> Store for WithJournal<S> {
    fn append_events(&self, events: &mut [AuditEvent], fsync: bool) -> Result<()> {
        self.store.append_events(events, fsync)
    }

    fn query_events(&self, filter: &EventFilter) -> Result<Vec<AuditEvent>> {
        // The journal first: a segment the indexer deletes after this read has its events in
        // the store by the time the store is read, so nothing falls between the two. (Read
        // the other way round, events indexed in between were in neither.)
        let tail: Vec<AuditEvent> = journal_tail(&self.journal, 0)?
            .into_iter()
            .filter(|e| filter.matches(e))
            .collect();
        let mut events = if filter.limit == Some(0) {
            Vec::new()
        } else {
            self.store.query_events(filter)?
        };
        // Events both indexed and not yet deleted from the journal appear once.
        let stored: std::collections::HashSet<u64> = events.iter().map(|e| e.seq).collect();
        events.extend(tail.into_iter().filter(|e| !stored.contains(&e.seq)));
        events.sort_by_key(|e| e.seq);
        if let Some(n) = filter.limit
            && events.len() > n
        {
            events.drain(..events.len() - n);
        }
        Ok(events)
    }

    fn verify_chain(&self) -> Result<ChainReport> {
        self.store.verify_chain()
    }

    fn put_access_key(&self, key: &crate::store::AccessKeyRecord) -> Result<()> {
        self.store.put_access_key(key)
    }

    fn access_key_by_hash(
        &self,
        secret_hash: &str,
    ) -> Result<Option<crate::store::AccessKeyRecord>> {
        self.store.access_key_by_hash(secret_hash)
    }

    fn revoke_access_key(&self, id: &str) -> Result<bool> {
        self.store.revoke_access_key(id)
    }

    fn insert_chained(
        &self,
        events: &[&AuditEvent],
        lines: &[&str],
        at: Option<crate::store::SegmentAt<'_>>,
    ) -> Result<()> {
        self.store.insert_chained(events, lines, at)
    }

    fn last_event(&self) -> Result<Option<(u64, String)>> {
        self.store.last_event()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::audit::event::EventKind;
    use crate::audit::{AuditLog, journal_dir};
    use crate::config::Durability;
    use crate::store::SqliteStore;

    fn event(session: &str, statement: &str) -> AuditEvent {
        let mut ev = AuditEvent::new(EventKind::Command, session);
        ev.statement = Some(statement.to_string());
        ev
    }

    #[tokio::test]
    async fn queries_see_events_still_only_in_the_journal() {
        let dir =
            std::env::temp_dir().join(format!("portcullis-tail-{}", crate::util::random_hex(6)));
        let journal = journal_dir(&dir);
        let writer_store = Arc::new(SqliteStore::open_in_memory().unwrap());
        let log =
            AuditLog::start(writer_store, Durability::Process, journal.clone(), None).unwrap();
        log.record(event("s1", "select 1")).await.unwrap();
        log.record(event("s1", "select 2")).await.unwrap();
        log.record(event("s2", "select 3")).await.unwrap();

        // A reader whose store has none of them finds all three in the running journal.
        let reader = WithJournal {
            store: SqliteStore::open_in_memory().unwrap(),
            journal: journal.clone(),
        };
        let all = reader.query_events(&EventFilter::default()).unwrap();
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        let s2 = reader
            .query_events(&EventFilter {
                session: Some("s2".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(s2.len(), 1);
        assert_eq!(s2[0].statement.as_deref(), Some("select 3"));
        let last_two = reader
            .query_events(&EventFilter {
                limit: Some(2),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            last_two.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![2, 3]
        );
        log.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
