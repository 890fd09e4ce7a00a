//! How the approvals service is configured and where its audit events go.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::audit::AuditLog;
use crate::audit::event::AuditEvent;
use crate::config::{ApprovalsConfig, parse_duration};

/// A boxed audit write.
pub type AuditFuture<'a> = Pin<Box<dyn Future<Output = crate::error::Result<()>> + Send + 'a>>;

/// Where approval events go. [`AuditLog`] implements it (durable before it returns).
pub trait ApprovalAudit: Send + Sync + 'static {
    /// Record one event.
    fn record(&self, ev: AuditEvent) -> AuditFuture<'_>;
}

impl ApprovalAudit for AuditLog {
    fn record(&self, ev: AuditEvent) -> AuditFuture<'_> {
        Box::pin(async move { AuditLog::record(self, ev).await.map(|_| ()) })
    }
}

/// How the service behaves.
#[derive(Debug, Clone)]
pub struct ApprovalSettings {
    /// Approver groups when the rule names none.
    pub approvers: Vec<String>,
    /// How long a request waits before it expires.
    pub pending_ttl: Duration,
    /// Longest window that may be asked for.
    pub max_window: Duration,
    /// This gateway's stable name among replicas sharing the store. One-time requests pending
    /// under this name when the service starts are abandoned, so replicas need distinct names.
    pub node: String,
    /// How often the store is re-read for changes made elsewhere, and expiries swept.
    pub poll_interval: Duration,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        ApprovalSettings {
            approvers: Vec::new(),
            pending_ttl: Duration::from_secs(15 * 60),
            max_window: Duration::from_secs(8 * 3600),
            node: "local".to_string(),
            poll_interval: Duration::from_secs(1),
        }
    }
}

impl ApprovalSettings {
    /// Settings from the `[approvals]` section (already validated) for gateway `node`.
    pub fn from_config(cfg: &ApprovalsConfig, node: &str) -> Result<ApprovalSettings, String> {
        Ok(ApprovalSettings {
            approvers: cfg.approvers.clone(),
            pending_ttl: parse_duration(&cfg.pending_ttl)
                .map_err(|e| format!("approvals.pending_ttl: {e}"))?,
            max_window: parse_duration(&cfg.max_window)
                .map_err(|e| format!("approvals.max_window: {e}"))?,
            node: node.to_string(),
            ..ApprovalSettings::default()
        })
    }
}
