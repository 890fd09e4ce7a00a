//! What a proxy asks the approvals service for, and how a held command's wait ends.

use std::time::Duration;

use super::ApprovalError;
use super::model::ApprovalRequest;
use crate::policy::{Decision, Verdict};

/// What to approve, as the caller knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewKind {
    /// Hold this exact command in `session`.
    OneTime {
        fingerprint: String,
        statement: String,
        session: String,
        /// Bound parameter values for reviewers, already masked; see
        /// [`ApprovalKind::OneTime`].
        parameters: Vec<Option<String>>,
        /// Tables the command touches.
        tables: Vec<String>,
        /// Not held: a grant its requester uses by sending the command again once approved
        /// (see [`ApprovalKind::OneTime`](super::ApprovalKind::OneTime)).
        grant: bool,
    },
    /// A window of this length, starting when granted.
    Window { duration: Duration },
}

/// A request about to be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRequest {
    pub kind: NewKind,
    pub connection: String,
    pub action: String,
    pub reason: Option<String>,
    /// Policies that asked for review.
    pub policies: Vec<String>,
    /// Approvals needed (at least 1).
    pub required: u32,
    /// Approver groups from `@approvers`; empty means the configured default.
    pub approvers: Vec<String>,
}

impl NewRequest {
    /// A request for `kind` needing one approval from the default approvers; use
    /// [`with_review`](Self::with_review) to take the rule's numbers.
    pub fn new(kind: NewKind, connection: &str, action: &str) -> NewRequest {
        NewRequest {
            kind,
            connection: connection.to_string(),
            action: action.to_string(),
            reason: None,
            policies: Vec::new(),
            required: 1,
            approvers: Vec::new(),
        }
    }

    /// Take the approval count, approver groups and policy ids from a Review decision.
    pub fn with_review(mut self, decision: &Decision) -> NewRequest {
        if let Verdict::Review {
            approvals,
            approvers,
        } = &decision.verdict
        {
            self.required = *approvals;
            self.approvers = approvers.clone();
        }
        self.policies = decision.policies.clone();
        self
    }

    /// Set why the requester needs it.
    pub fn with_reason(mut self, reason: Option<String>) -> NewRequest {
        self.reason = reason;
        self
    }
}

/// How a held command's wait ended.
#[derive(Debug)]
pub enum Outcome {
    /// Approved: run the command, recording the approval id with it.
    Approved(ApprovalRequest),
    /// Denied, expired, cancelled or abandoned: the command must not run.
    Refused(ApprovalRequest),
    /// The request could not be read: fail closed.
    Failed(ApprovalError),
}

impl Outcome {
    /// Whether the command may run.
    pub fn is_approved(&self) -> bool {
        matches!(self, Outcome::Approved(_))
    }

    /// What the client reads.
    pub fn message(&self) -> String {
        match self {
            Outcome::Approved(r) | Outcome::Refused(r) => r.outcome_message(),
            Outcome::Failed(e) => format!("approval could not be checked: {e}"),
        }
    }
}
