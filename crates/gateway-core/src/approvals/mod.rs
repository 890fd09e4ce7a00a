//! Approvals: a command or a time window that policy sent to review waits here for people to
//! approve it.
//!
//! - **One-time** requests hold one exact command (identified by a fingerprint of its text and
//!   parameters) inside the live session until approved, denied, expired or cancelled.
//! - **Window** requests are asked ahead; once granted, the identity's matching commands on
//!   that connection pass without holding until the window ends (each carries the request id).
//!
//! Requests are persisted through [`ApprovalStore`], so they survive a restart and replicas
//! sharing the store see each other's votes. A one-time request that was pending when its
//! gateway stopped can never release its command: on start-up it becomes
//! [`State::Abandoned`] (a state of its own, so reviewers can tell it from a cancel) and stays
//! listed.

mod model;
mod notice;
mod request;
mod service;
mod settings;
pub mod webhook;

#[cfg(test)]
mod durable_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod webhook_tests;

use thiserror::Error;

pub use model::{ApprovalKind, ApprovalRequest, State, Vote, fingerprint, new_approval_id};
pub use request::{NewKind, NewRequest, Outcome};
pub use service::{ApprovalStats, Approvals};
pub use settings::{ApprovalAudit, ApprovalSettings, AuditFuture};
pub use webhook::{Notice, WebhookNotifier, WebhookOptions, WebhookStats, WebhookTarget};

use crate::error::Side;

/// Why an approval operation was refused or failed. The `Display` text is what the caller
/// (reviewer, CLI, held client) reads.
#[derive(Debug, Error)]
pub enum ApprovalError {
    #[error("approval {0} does not exist")]
    NotFound(String),
    #[error("approval {id} is {state}; only a pending request takes votes or a cancel")]
    NotPending { id: String, state: State },
    #[error("approval {0} was requested by you; someone else must approve or deny it")]
    SelfVote(String),
    #[error("you have already voted on approval {0}")]
    AlreadyVoted(String),
    #[error("approval {id} can only be decided by members of: {groups}")]
    NotApprover { id: String, groups: String },
    #[error("approval {0} can only be cancelled by its requester or the session holding it")]
    NotRequester(String),
    #[error("a window of {asked_secs}s is longer than the longest allowed ({max_secs}s)")]
    WindowTooLong { asked_secs: u64, max_secs: u64 },
    #[error("invalid approval request: {0}")]
    Invalid(String),
    #[error("approval {0} is being changed by someone else; try again")]
    Busy(String),
    #[error(transparent)]
    Store(#[from] crate::Error),
}

impl ApprovalError {
    /// Who is at fault: a refused vote or bad request is the caller's; a store failure is ours.
    pub fn side(&self) -> Side {
        match self {
            ApprovalError::Store(e) => e.side(),
            ApprovalError::Busy(_) => Side::Gateway,
            ApprovalError::NotFound(_)
            | ApprovalError::NotPending { .. }
            | ApprovalError::SelfVote(_)
            | ApprovalError::AlreadyVoted(_)
            | ApprovalError::NotApprover { .. }
            | ApprovalError::NotRequester(_)
            | ApprovalError::WindowTooLong { .. }
            | ApprovalError::Invalid(_) => Side::Client,
        }
    }
}

/// Which requests a listing returns. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApprovalFilter {
    pub state: Option<State>,
    /// `one_time` or `window` (see [`ApprovalKind::tag`]).
    pub kind: Option<&'static str>,
    pub connection: Option<String>,
    /// Matches the requester's principal (`issuer/subject`) or bare subject.
    pub requester: Option<String>,
    /// Only one-time requests held by this gateway node.
    pub node: Option<String>,
    /// At most this many, the newest; results are oldest first.
    pub limit: Option<usize>,
}

/// Durable approval requests. Implemented by [`SqliteStore`](crate::store::SqliteStore); a
/// store shared by replicas lets a vote on one release a command held on another.
pub trait ApprovalStore: Send + Sync + 'static {
    /// Store a new request (its `version` as given, normally 0). Fails if the id exists.
    fn create_approval(&self, req: &ApprovalRequest) -> crate::error::Result<()>;
    /// One request by id.
    fn approval(&self, id: &str) -> crate::error::Result<Option<ApprovalRequest>>;
    /// Requests matching `filter`, oldest first.
    fn list_approvals(&self, filter: &ApprovalFilter)
    -> crate::error::Result<Vec<ApprovalRequest>>;
    /// Replace a request if its stored version is still `req.version`; the stored version
    /// becomes `req.version + 1`. False means someone else changed it first (reload, retry).
    fn update_approval(&self, req: &ApprovalRequest) -> crate::error::Result<bool>;
    /// Granted window requests whose window is still open at `now_us`.
    fn active_windows(&self, now_us: i64) -> crate::error::Result<Vec<ApprovalRequest>>;
}
