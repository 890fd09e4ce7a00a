//! Audit: typed events, a single group-committing writer, the journal in front of the store,
//! the hash chain, and sinks.
//! Audit is not logging: if an event cannot be recorded, the command it records does not run.

pub mod anchor;
mod indexer;
pub mod journal;
pub mod jsonl;
pub mod tail;
pub mod verify;
pub mod writer;

pub use crate::event::{self, AuditEvent, EventFilter, EventKind, IdentityRecord, Verdict, chain};
pub use journal::{journal_dir, recover_journal};
pub use writer::{Anchoring, AuditLog, AuditStats};
