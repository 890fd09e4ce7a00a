//! The single audit writer: batches events from all sessions into one commit.
pub struct AuditLog;
