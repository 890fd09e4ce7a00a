//! What a logged-in session's channels share, and how its requests are described to the
//! gate that decides, holds and records them. A leaf: it depends on gateway-core only.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

use gateway_core::Identity;
use gateway_core::action::{Action, SshKind, SshRequest};
use gateway_core::config::ConnectionConfig;
use gateway_core::gate::{Command, SessionGate, Waiting};
use gateway_core::services::Services;
use russh::server;
use tokio::sync::watch;

/// The gate's description of a start request (exec, shell, sftp) or forward.
pub(crate) fn command(kind: SshKind, command: Option<Arc<str>>) -> Command {
    let actions = match (kind, &command) {
        (SshKind::Exec, Some(line)) => SshRequest::exec(line.clone()),
        _ => vec![Action::Ssh(SshRequest::new(kind, command.clone()))],
    };
    Command {
        detail: exec_detail(&actions),
        actions,
        action: kind.cedar_id().to_string(),
        text: match (kind, command) {
            (_, Some(c)) => c.to_string(),
            (SshKind::Shell, None) => "shell".into(),
            (SshKind::Sftp, None) => "subsystem sftp".into(),
            (_, None) => String::new(),
        },
        tables: Vec::new(),
        parameters: Vec::new(),
        fingerprint: None,
        waiting: if kind == SshKind::Forward {
            Waiting::Never
        } else {
            Waiting::Hold
        },
    }
}

/// What a session's channels share once the client is logged in.
pub(crate) struct SessionCtx {
    pub session_id: String,
    pub conn: ConnectionConfig,
    pub target_user: String,
    pub services: Arc<Services>,
    /// Decides, holds and records every request of the session.
    pub gate: SessionGate,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// The client connection, for channels the target opens towards it (remote forwards,
    /// agent). Set when the client first opens a channel or asks for a forward.
    pub front: OnceLock<server::Handle>,
    /// Remote forwards (`ssh -R`) the target listens on for this session: address, port.
    pub remote_forwards: std::sync::Mutex<Vec<(String, u32)>>,
    /// Agent forwarding: undecided, allowed or refused (decided once per session).
    pub agent: watch::Sender<Option<bool>>,
}

impl SessionCtx {
    pub(crate) fn identity(&self) -> &Identity {
        self.gate.identity()
    }
}

/// Set once the session has started; read by the accept task to record its end.
pub(crate) type SessionSlot = Arc<OnceLock<Arc<SessionCtx>>>;

/// What the parser saw in an exec line, for its audit event: the programs it runs and why
/// part of it could not be known before it ran.
fn exec_detail(actions: &[Action]) -> Option<serde_json::Value> {
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
