//! Durable state behind one trait: audit events (hash-chained), access keys, sessions.
//! SQLite is the embedded default; a PostgreSQL store for many replicas implements the same
//! trait.

pub mod sqlite;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::IdentityRecord;
use crate::event::{AuditEvent, EventFilter};

pub use sqlite::SqliteStore;

/// Where journal lines lie on disk: the segment file and the byte offset of the first line.
/// A store given this may keep the position instead of a copy of the lines.
#[derive(Debug, Clone, Copy)]
pub struct SegmentAt<'a> {
    pub path: &'a std::path::Path,
    pub offset: u64,
}

/// A stored access key (the secret itself is never stored, only its SHA-256).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessKeyRecord {
    /// Public id, shown in listings and audit (`ak_...`).
    pub id: String,
    /// Hex SHA-256 of the secret key string.
    pub secret_hash: String,
    /// The identity the key stands for, as verified when it was minted.
    pub identity: IdentityRecord,
    pub created_us: i64,
    /// Unix seconds.
    pub expires_at: i64,
    pub revoked: bool,
}

/// Result of checking the audit hash chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    /// Events checked.
    pub events: u64,
    /// First problem found, if any: the seq and what is wrong.
    pub problem: Option<(u64, String)>,
}

/// What a chain walk saw at the positions it was asked about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probed {
    /// Seq and hash of the last event that verified.
    pub head: Option<(u64, String)>,
    /// The hash of each probed seq that verified.
    pub hashes: std::collections::BTreeMap<u64, String>,
}

/// The gateway's durable state.
pub trait Store: Send + Sync + 'static {
    /// Append events atomically, in order: assigns each its `seq`, `prev_hash` and `hash`
    /// (continuing the chain from the last stored event). When `fsync` is true the data is on
    /// disk before this returns; otherwise it is committed (survives the process being
    /// killed, not power loss).
    fn append_events(&self, events: &mut [AuditEvent], fsync: bool) -> Result<()>;
    /// Insert events that already carry their place in the chain (`seq`, `prev_hash`, `hash`
    /// set by the audit journal), atomically, in order. `lines` holds their journal lines,
    /// one per event in the same order, without their newlines: that text is what the store
    /// keeps, so events are not serialised again. Events whose `seq` the store already holds
    /// are skipped (the one at the store's last `seq` must have the same hash); the rest must
    /// continue the stored chain exactly (`seq` one higher, `prev_hash` equal to the previous
    /// hash), or nothing is inserted. With `at`, the lines are those bytes of a journal
    /// segment that stays where it is: the store keeps their position, not a copy.
    fn insert_chained(
        &self,
        events: &[&AuditEvent],
        lines: &[&str],
        at: Option<SegmentAt<'_>>,
    ) -> Result<()> {
        let _ = (events, lines, at);
        Err(Error::Store(
            "this store cannot take events chained by the journal".to_string(),
        ))
    }
    /// The last stored event's `seq` and `hash`, if any.
    fn last_event(&self) -> Result<Option<(u64, String)>> {
        let last = self.query_events(&EventFilter {
            limit: Some(1),
            ..EventFilter::default()
        })?;
        Ok(last.into_iter().next_back().map(|e| (e.seq, e.hash)))
    }
    /// Events matching `filter`, in chain order.
    fn query_events(&self, filter: &EventFilter) -> Result<Vec<AuditEvent>>;
    /// Recompute the whole chain and report the first edited, deleted or reordered event.
    fn verify_chain(&self) -> Result<ChainReport>;
    /// [`verify_chain`](Self::verify_chain), also reporting the head and the hashes at
    /// `probes` (where anchors are checked), without writing anything.
    fn verify_chain_probing(
        &self,
        probes: &std::collections::BTreeSet<u64>,
    ) -> Result<(ChainReport, Probed)> {
        let _ = probes;
        Err(crate::error::Error::Store(
            "this store cannot report chain positions".to_string(),
        ))
    }
    /// Store a new access key.
    fn put_access_key(&self, key: &AccessKeyRecord) -> Result<()>;
    /// Look an access key up by the hash of its secret.
    fn access_key_by_hash(&self, secret_hash: &str) -> Result<Option<AccessKeyRecord>>;
    /// Revoke an access key by id; false if there was none.
    fn revoke_access_key(&self, id: &str) -> Result<bool>;
}
