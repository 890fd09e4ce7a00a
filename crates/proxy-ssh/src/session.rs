//! What a logged-in session's channels share, how its requests are decided, and how each
//! decided request is recorded. A leaf: it depends on gateway-core only.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use gateway_core::Identity;
use gateway_core::action::{Action, SshKind, SshRequest};
use gateway_core::audit::{AuditEvent, EventKind, IdentityRecord, Verdict as AuditVerdict};
use gateway_core::config::ConnectionConfig;
use gateway_core::identity::watch::CredentialWatch;
use gateway_core::policy::{ConnectionRef, Decision, Verdict};
use gateway_core::services::Services;
use russh::server;
use tokio::sync::watch;

/// Longest wait for token verification or an audit write.
pub(crate) const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// What a session's channels share once the client is logged in.
pub(crate) struct SessionCtx {
    pub session_id: String,
    pub identity: Identity,
    pub conn: ConnectionConfig,
    pub target_user: String,
    pub services: Arc<Services>,
    pub commands: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// The client connection, for channels the target opens towards it (remote forwards,
    /// agent). Set when the client first opens a channel or asks for a forward.
    pub front: OnceLock<server::Handle>,
    /// Remote forwards (`ssh -R`) the target listens on for this session: address, port.
    pub remote_forwards: std::sync::Mutex<Vec<(String, u32)>>,
    /// Agent forwarding: undecided, allowed or refused (decided once per session).
    pub agent: watch::Sender<Option<bool>>,
    /// The session's access key, looked at again at each request and on a timer.
    pub credential: CredentialWatch,
}

impl SessionCtx {
    /// Decide a channel request of this session (an exec line is several actions, one per
    /// simple command, and passes only if each does): refused outright once the session's
    /// token has expired or its access key was revoked (checked at every request), else by
    /// policy.
    pub(crate) fn decide(&self, actions: &[Action]) -> Decision {
        let refused = if gateway_core::util::now_secs() > self.identity.expires_at {
            Some("the session's token has expired; reconnect with a fresh token".to_string())
        } else {
            self.credential
                .refusal(&self.services.verifier, &self.identity)
        };
        match refused {
            Some(reason) => Decision {
                verdict: Verdict::Deny,
                policies: Vec::new(),
                reason: Some(reason),
                policy_version: 0,
            },
            None => self.services.policy.current().decide_all(
                &self.identity,
                &ConnectionRef {
                    name: &self.conn.name,
                    protocol: self.conn.protocol,
                },
                actions,
            ),
        }
    }
}

/// Set once the session has started; read by the accept task to record its end.
pub(crate) type SessionSlot = Arc<OnceLock<Arc<SessionCtx>>>;

/// What the parser saw in an exec line, for its audit event: the programs it runs and why
/// part of it could not be known before it ran.
pub(crate) fn exec_detail(actions: &[Action]) -> Option<serde_json::Value> {
    let Some(Action::Ssh(SshRequest {
        exec: Some(exec), ..
    })) = actions.first()
    else {
        return None;
    };
    let mut detail = serde_json::json!({ "programs": exec.line.programs });
    if !exec.line.opaque.is_empty() {
        detail["opaque"] = serde_json::json!(exec.line.opaque);
    }
    Some(detail)
}

/// Record a decided request durably before it is answered or forwarded.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn record_command(
    ctx: &SessionCtx,
    number: u64,
    kind: SshKind,
    command: Option<&str>,
    decision: &Decision,
    verdict: AuditVerdict,
    approval: Option<String>,
    detail: Option<serde_json::Value>,
) -> Result<(), gateway_core::Error> {
    let mut ev = AuditEvent::new(EventKind::Command, &ctx.session_id);
    ev.identity = Some(IdentityRecord::from(&ctx.identity));
    ev.connection = Some(ctx.conn.name.clone());
    ev.protocol = Some("ssh".into());
    ev.command = Some(number);
    ev.statement = Some(match (kind, command) {
        (_, Some(c)) => c.to_string(),
        (SshKind::Shell, None) => "shell".into(),
        (SshKind::Sftp, None) => "subsystem sftp".into(),
        (_, None) => String::new(),
    });
    ev.action = Some(kind.cedar_id().into());
    ev.verdict = Some(verdict);
    ev.approval = approval;
    ev.policies = decision.policies.clone();
    ev.reason = decision.reason.clone();
    ev.detail = detail;
    tokio::time::timeout(VERIFY_TIMEOUT, ctx.services.audit.record(ev))
        .await
        .unwrap_or_else(|_| Err(gateway_core::Error::Audit("timed out".into())))
        .map(|_| ())
}
