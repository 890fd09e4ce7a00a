//! Audit: typed events, a single group-committing writer, the hash chain, and sinks.
//! Audit is not logging: if an event cannot be recorded, the command it records does not run.

pub mod chain;
pub mod event;
pub mod jsonl;
pub mod writer;

pub use event::{AuditEvent, EventFilter, EventKind, IdentityRecord, Verdict};
pub use writer::{AuditLog, AuditStats};
