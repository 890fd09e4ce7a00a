//! Opening a session, the same way for every protocol: the connection looked up among those
//! of the client's protocol, the `connect` decision, `auth_failed` for every refusal, and the
//! session's start on record before the session exists.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::SessionGate;
use crate::action::Action;
use crate::audit::{AuditEvent, EventKind, IdentityRecord};
use crate::config::{ConnectionConfig, Protocol};
use crate::identity::Identity;
use crate::policy::{ConnectionRef, Decision, Verdict};
use crate::services::Services;

/// Longest wait for the session's start to be on record.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a session does not open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenRefusal {
    /// No connection of this protocol has the name the client gave.
    UnknownConnection(String),
    /// Policy refuses `connect` (the reason), or the proxy refused for its own reason.
    Denied(String),
    /// The session's start could not be recorded.
    Audit(String),
}

impl std::fmt::Display for OpenRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenRefusal::UnknownConnection(name) => {
                write!(f, "connection \"{name}\" is not configured on this gateway")
            }
            OpenRefusal::Denied(reason) => f.write_str(reason),
            OpenRefusal::Audit(e) => write!(f, "audit is unavailable: {e}"),
        }
    }
}

/// A connection attempt of one client, from its first message until its session starts.
pub struct Opening {
    services: Arc<Services>,
    protocol: Protocol,
    session_id: String,
    client: String,
}

/// A connection the client may use, and the decision that allowed it.
pub struct Admission {
    pub conn: ConnectionConfig,
    pub decision: Decision,
}

impl Opening {
    pub fn new(services: Arc<Services>, protocol: Protocol, client: String) -> Opening {
        Opening {
            services,
            protocol,
            session_id: crate::util::new_session_id(),
            client,
        }
    }

    /// The id the session will have (and its refusals are recorded under).
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Record a refusal (`auth_failed`) of this attempt and count it. `identity` is the
    /// verified caller, when it got that far; `connection` the name the client gave.
    pub async fn refused(&self, connection: &str, identity: Option<&Identity>, reason: &str) {
        let ev = self.auth_failed(connection, identity, reason.to_string());
        let _ = self.services.audit.record_later(ev).await;
    }

    fn auth_failed(
        &self,
        connection: &str,
        identity: Option<&Identity>,
        reason: String,
    ) -> AuditEvent {
        let mut ev = AuditEvent::new(EventKind::AuthFailed, &self.session_id);
        ev.connection = Some(connection.into());
        ev.protocol = Some(self.protocol.as_str().into());
        ev.client = Some(self.client.clone());
        ev.identity = identity.map(|i| Arc::new(IdentityRecord::from(i)));
        ev.reason = Some(reason);
        self.services
            .metrics
            .protocol(self.protocol)
            .auth_failures_total
            .fetch_add(1, Ordering::Relaxed);
        ev
    }

    /// The connection named `name`, if it is one of this protocol's and policy lets
    /// `identity` connect to it. Refusals are recorded.
    pub async fn admit(&self, identity: &Identity, name: &str) -> Result<Admission, OpenRefusal> {
        let Some(conn) = self
            .services
            .config
            .connection(name)
            .filter(|c| c.protocol == self.protocol)
            .cloned()
        else {
            let refusal = OpenRefusal::UnknownConnection(name.to_string());
            self.refused(name, Some(identity), &refusal.to_string())
                .await;
            return Err(refusal);
        };
        let decision = self.services.policy.current().decide(
            identity,
            &ConnectionRef {
                name: &conn.name,
                protocol: conn.protocol,
            },
            &Action::Connect,
        );
        if !matches!(decision.verdict, Verdict::Allow(_)) {
            let reason = decision
                .reason
                .clone()
                .unwrap_or_else(|| "denied by policy".into());
            let mut ev = self.auth_failed(&conn.name, Some(identity), reason.clone());
            ev.action = Some("connect".into());
            ev.verdict = Some(decision.audit_verdict());
            ev.policies = decision.policies.clone();
            let _ = self.services.audit.record_later(ev).await;
            return Err(OpenRefusal::Denied(reason));
        }
        Ok(Admission { conn, decision })
    }

    /// Put the session's start on record (with `detail`), count it, and hand over its gate.
    /// Nothing of the session may happen before this returns Ok.
    pub async fn start(
        self,
        identity: Identity,
        admission: &Admission,
        detail: Option<serde_json::Value>,
    ) -> Result<SessionGate, OpenRefusal> {
        let mut start = AuditEvent::new(EventKind::SessionStart, &self.session_id);
        start.identity = Some(Arc::new(IdentityRecord::from(&identity)));
        start.connection = Some(admission.conn.name.as_str().into());
        start.protocol = Some(self.protocol.as_str().into());
        start.client = Some(self.client.clone());
        start.action = Some("connect".into());
        start.verdict = Some(admission.decision.audit_verdict());
        start.policies = admission.decision.policies.clone();
        start.detail = detail;
        let recorded = tokio::time::timeout(START_TIMEOUT, self.services.audit.record(start))
            .await
            .unwrap_or_else(|_| Err(crate::Error::Audit("timed out".into())));
        let metrics = &self.services.metrics;
        if let Err(e) = recorded {
            metrics.audit_failures_total.fetch_add(1, Ordering::Relaxed);
            return Err(OpenRefusal::Audit(e.to_string()));
        }
        let counters = metrics.protocol(self.protocol);
        counters.sessions_total.fetch_add(1, Ordering::Relaxed);
        counters.sessions_active.fetch_add(1, Ordering::Relaxed);
        Ok(SessionGate::new(
            self.services,
            &self.session_id,
            identity,
            &admission.conn.name,
            self.protocol,
        ))
    }
}
