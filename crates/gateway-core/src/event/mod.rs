//! The audit event: one record of a session boundary, a command and its decision, or a
//! gateway-level occurrence. Stored hash-chained; never contains result data.

pub mod chain;
pub mod line;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// What an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A session was opened (after identity and `connect` policy).
    SessionStart,
    /// A session ended.
    SessionEnd,
    /// A connection attempt was refused before a session existed (bad token, denied connect).
    AuthFailed,
    /// A command was decided. Chained before an allowed command is forwarded, and durable
    /// before its results reach the client.
    Command,
    /// A command finished: its timing, row count and error.
    CommandEnd,
    /// An access key was minted or revoked.
    AccessKey,
    /// Policy was loaded or a reload was refused.
    Policy,
    /// An approval was requested (`approval` holds its id; `detail` the kind and rule).
    ApprovalRequest,
    /// Someone approved or denied a request (`identity` is the voter).
    ApprovalVote,
    /// A request reached its final state: approved, denied, expired, cancelled, abandoned.
    ApprovalOutcome,
}

impl EventKind {
    /// The snake_case name used in storage and filters.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::SessionStart => "session_start",
            EventKind::SessionEnd => "session_end",
            EventKind::AuthFailed => "auth_failed",
            EventKind::Command => "command",
            EventKind::CommandEnd => "command_end",
            EventKind::AccessKey => "access_key",
            EventKind::Policy => "policy",
            EventKind::ApprovalRequest => "approval_request",
            EventKind::ApprovalVote => "approval_vote",
            EventKind::ApprovalOutcome => "approval_outcome",
        }
    }
}

/// A decision's verdict as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    Deny,
    Review,
}

/// How an identity proved itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A JWT verified against the issuer's keys.
    Jwt,
    /// An opaque access key from `token exchange`, bound to an earlier verified JWT.
    AccessKey,
    /// An SSH public key mapped to an identity in the configuration, whose possession the
    /// SSH layer verified.
    SshKey,
}

/// The identity as recorded with an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRecord {
    pub principal: String,
    pub issuer: String,
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, String>,
    pub method: AuthMethod,
}

/// One audit event. `seq`, `prev_hash` and `hash` are assigned by the store when appended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Position in the chain, assigned on append (0 before).
    #[serde(default)]
    pub seq: u64,
    /// Microseconds since the Unix epoch.
    pub time_us: i64,
    pub kind: EventKind,
    /// Session id (empty for gateway-level events).
    #[serde(default)]
    pub session: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Shared by every event of a session: cloned by reference, written in full.
    pub identity: Option<Arc<IdentityRecord>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Cow<'static, str>>,
    /// Client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Command number within the session, linking `command` and `command_end`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<u64>,
    /// The command text as the client sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
    /// Cedar action id (`sql.read`, `connect`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Ids of the policies that decided.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Free-form details for kinds that need them (policy reloads, access keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
    /// Hash of the previous event in the chain (hex), assigned on append.
    #[serde(default)]
    pub prev_hash: String,
    /// SHA-256 over `prev_hash` and this event's content (hex), assigned on append.
    #[serde(default)]
    pub hash: String,
}

impl AuditEvent {
    /// A new event of `kind` in `session`, stamped now; everything else empty.
    pub fn new(kind: EventKind, session: &str) -> AuditEvent {
        AuditEvent {
            seq: 0,
            time_us: crate::util::now_micros(),
            kind,
            session: session.to_string(),
            identity: None,
            connection: None,
            protocol: None,
            client: None,
            command: None,
            statement: None,
            action: None,
            tables: Vec::new(),
            verdict: None,
            policies: Vec::new(),
            reason: None,
            approval: None,
            duration_us: None,
            rows: None,
            error: None,
            detail: None,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }
}

/// Which events a query returns. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub session: Option<String>,
    /// Matches the principal (`issuer/subject`) or the bare subject.
    pub identity: Option<String>,
    pub connection: Option<String>,
    pub kind: Option<EventKind>,
    pub approval: Option<String>,
    /// Only events with `seq` greater than this.
    pub after_seq: Option<u64>,
    /// Only events at or after this time (µs).
    pub since_us: Option<i64>,
    /// At most this many, newest last. `None` means no limit.
    pub limit: Option<usize>,
}
