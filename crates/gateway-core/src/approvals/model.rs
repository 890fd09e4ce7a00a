//! The approval request and its state machine, as pure functions over a value: who may vote,
//! when it is decided, when it expires. The service persists what these return.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ApprovalError;
use crate::audit::event::IdentityRecord;

/// Prefix of every approval id.
pub const ID_PREFIX: &str = "apr_";

/// A new request id: `apr_` and 12 hex digits, short enough to type into the CLI.
pub fn new_approval_id() -> String {
    format!("{ID_PREFIX}{}", crate::util::random_hex(6))
}

/// Fingerprint of one command: SHA-256 (hex) over its text and parameters, each
/// length-prefixed so that no two different commands share one.
pub fn fingerprint(text: &str, params: &[Option<&[u8]>]) -> String {
    let mut h = Sha256::new();
    h.update((text.len() as u64).to_be_bytes());
    h.update(text.as_bytes());
    h.update((params.len() as u64).to_be_bytes());
    for p in params {
        match p {
            None => h.update([0u8]),
            Some(b) => {
                h.update([1u8]);
                h.update((b.len() as u64).to_be_bytes());
                h.update(b);
            }
        }
    }
    crate::util::hex_lower(&h.finalize())
}

/// Where a request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for votes.
    Pending,
    /// Enough approvers said yes: the command runs / the window is open.
    Approved,
    /// Someone said no.
    Denied,
    /// Nobody decided before `expires_us`.
    Expired,
    /// The requester (or the session holding the command) withdrew it.
    Cancelled,
    /// The gateway holding the command restarted; the command can never run.
    Abandoned,
}

impl State {
    /// The snake_case name used in storage and filters.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Denied => "denied",
            State::Expired => "expired",
            State::Cancelled => "cancelled",
            State::Abandoned => "abandoned",
        }
    }

    /// The state named `s`, if any.
    pub fn parse(s: &str) -> Option<State> {
        [
            State::Pending,
            State::Approved,
            State::Denied,
            State::Expired,
            State::Cancelled,
            State::Abandoned,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// Whether the request is decided for good.
    pub fn is_final(self) -> bool {
        self != State::Pending
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is being approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ApprovalKind {
    /// One exact command held in a live session.
    OneTime {
        /// What the caller computed with [`fingerprint`]: the command that may run.
        fingerprint: String,
        /// The command text, for reviewers.
        statement: String,
        /// Its bound parameter values as text (`$1` first), masked like the session's
        /// results; `None` is SQL NULL. Empty when it has none.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        parameters: Vec<Option<String>>,
        /// The tables the command touches, as classified.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tables: Vec<String>,
        /// The session holding the command (for a grant, the one that asked).
        session: String,
        /// The gateway node holding the session (restart handling); empty for a grant.
        node: String,
        /// A grant: the command is not held. Its requester sends it again once approved, and
        /// it runs once (request/response protocols: HTTP, Kubernetes).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        grant: bool,
    },
    /// A time window of `window_secs` from the moment it is granted.
    Window { window_secs: u64 },
}

impl ApprovalKind {
    /// `one_time` or `window`.
    pub fn tag(&self) -> &'static str {
        match self {
            ApprovalKind::OneTime { .. } => "one_time",
            ApprovalKind::Window { .. } => "window",
        }
    }
}

/// One reviewer's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// Principal (`issuer/subject`).
    pub who: String,
    pub subject: String,
    pub issuer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub at_us: i64,
    pub approve: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A persisted approval request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// `apr_…`
    pub id: String,
    /// Bumped by every stored change (optimistic concurrency between replicas).
    #[serde(default)]
    pub version: u64,
    pub kind: ApprovalKind,
    pub requester: IdentityRecord,
    pub connection: String,
    /// Cedar action (`sql.write`, ...).
    pub action: String,
    /// Why the requester needs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Ids of the policies that asked for review.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
    /// Distinct approvers needed.
    pub required: u32,
    /// Groups whose members may vote; empty means anyone other than the requester.
    #[serde(default)]
    pub approver_groups: Vec<String>,
    #[serde(default)]
    pub votes: Vec<Vote>,
    pub state: State,
    pub created_us: i64,
    /// A pending request expires at this time.
    pub expires_us: i64,
    /// End of a granted window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_until_us: Option<i64>,
    /// When the request reached its final state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_us: Option<i64>,
    /// Who closed it by cancelling (principal, or `session <id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_by: Option<String>,
    /// Why it was cancelled or abandoned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_reason: Option<String>,
    /// When an approved grant was used, and by which session: it runs once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_us: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_by: Option<String>,
}

/// Who asks to cancel.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CancelBy<'a> {
    /// The requester, verified.
    Requester(&'a IdentityRecord),
    /// The session holding the command (client cancel or disconnect).
    Session(&'a str),
}

/// Reason recorded on one-time requests abandoned at start-up.
pub(crate) const ABANDONED_REASON: &str = "the gateway restarted while the command was held";

impl ApprovalRequest {
    /// Approving votes so far.
    pub fn approvals(&self) -> usize {
        self.votes.iter().filter(|v| v.approve).count()
    }

    /// Whether this is a granted window still open at `now_us`.
    pub fn window_open(&self, now_us: i64) -> bool {
        matches!(self.kind, ApprovalKind::Window { .. })
            && self.state == State::Approved
            && self.window_until_us.is_some_and(|u| u > now_us)
    }

    /// Mark a pending request whose time is up as expired; true if it changed.
    pub(crate) fn expire_if_due(&mut self, now_us: i64) -> bool {
        if self.state != State::Pending || now_us < self.expires_us {
            return false;
        }
        self.close(State::Expired, now_us);
        true
    }

    /// Whether `voter` may vote now: pending, not the requester (same subject under any
    /// issuer), not voted before, and in an approver group.
    /// Whether `who` may see this request (its statement, parameters, votes): its
    /// requester, members of its approver groups, and those who voted on it. Nobody else.
    pub fn visible_to(&self, who: &crate::identity::Identity) -> bool {
        let principal = who.principal();
        principal == self.requester.principal
            || who.groups.iter().any(|g| self.approver_groups.contains(g))
            || self.votes.iter().any(|v| v.who == principal)
    }

    pub fn check_voter(&self, voter: &IdentityRecord) -> Result<(), ApprovalError> {
        if self.state != State::Pending {
            return Err(ApprovalError::NotPending {
                id: self.id.clone(),
                state: self.state,
            });
        }
        // The subject, not the principal: one person reaching the gateway through two
        // issuers with the same subject must not approve their own request.
        if voter.subject == self.requester.subject {
            return Err(ApprovalError::SelfVote(self.id.clone()));
        }
        if self.votes.iter().any(|v| v.subject == voter.subject) {
            return Err(ApprovalError::AlreadyVoted(self.id.clone()));
        }
        // No approver groups at all: nobody may approve (fail closed; configuration refuses
        // such rules, this guards a policy reloaded without them).
        if !voter
            .groups
            .iter()
            .any(|g| self.approver_groups.contains(g))
        {
            return Err(ApprovalError::NotApprover {
                id: self.id.clone(),
                groups: if self.approver_groups.is_empty() {
                    "(none: its rule names no approvers)".to_string()
                } else {
                    self.approver_groups.join(", ")
                },
            });
        }
        Ok(())
    }

    /// Record a vote: one deny denies; `required` distinct approvals approve (a window opens
    /// from now). Returns the vote recorded.
    pub(crate) fn apply_vote(
        &mut self,
        voter: &IdentityRecord,
        approve: bool,
        reason: Option<String>,
        now_us: i64,
    ) -> Result<Vote, ApprovalError> {
        self.check_voter(voter)?;
        let vote = Vote {
            who: voter.principal.clone(),
            subject: voter.subject.clone(),
            issuer: voter.issuer.clone(),
            display_name: voter.display_name.clone(),
            at_us: now_us,
            approve,
            reason,
        };
        self.votes.push(vote.clone());
        if !approve {
            self.close(State::Denied, now_us);
        } else if self.approvals() >= self.required as usize {
            if let ApprovalKind::Window { window_secs } = self.kind {
                let len = i64::try_from(window_secs.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
                self.window_until_us = Some(now_us.saturating_add(len));
            }
            self.close(State::Approved, now_us);
        }
        Ok(vote)
    }

    /// Withdraw a pending request, or end a granted window early (requester only).
    pub(crate) fn cancel(
        &mut self,
        by: CancelBy<'_>,
        reason: Option<String>,
        now_us: i64,
    ) -> Result<(), ApprovalError> {
        let closed_by = match by {
            CancelBy::Requester(who) => {
                if who.principal != self.requester.principal {
                    return Err(ApprovalError::NotRequester(self.id.clone()));
                }
                who.principal.clone()
            }
            CancelBy::Session(session) => match &self.kind {
                ApprovalKind::OneTime { session: held, .. } if held == session => {
                    format!("session {session}")
                }
                _ => return Err(ApprovalError::NotRequester(self.id.clone())),
            },
        };
        let ends_window = matches!(by, CancelBy::Requester(_)) && self.window_open(now_us);
        if self.state != State::Pending && !ends_window {
            return Err(ApprovalError::NotPending {
                id: self.id.clone(),
                state: self.state,
            });
        }
        if ends_window {
            self.window_until_us = Some(now_us);
        }
        self.close(State::Cancelled, now_us);
        self.closed_by = Some(closed_by);
        self.closed_reason = reason;
        Ok(())
    }

    /// Whether this is a grant for `fingerprint` that is pending, or approved and unused
    /// within `ttl_us` of its approval.
    pub fn grant_open(&self, fingerprint: &str, now_us: i64, ttl_us: i64) -> bool {
        let ApprovalKind::OneTime {
            grant: true,
            fingerprint: f,
            ..
        } = &self.kind
        else {
            return false;
        };
        f == fingerprint
            && match self.state {
                State::Pending => now_us < self.expires_us,
                State::Approved => {
                    self.used_us.is_none()
                        && self
                            .closed_us
                            .is_some_and(|c| now_us < c.saturating_add(ttl_us))
                }
                _ => false,
            }
    }

    /// Use an approved grant (once) for `session`.
    pub(crate) fn use_grant(
        &mut self,
        session: &str,
        now_us: i64,
        ttl_us: i64,
    ) -> Result<(), ApprovalError> {
        let fingerprint = match &self.kind {
            ApprovalKind::OneTime {
                grant: true,
                fingerprint,
                ..
            } => fingerprint.clone(),
            _ => {
                return Err(ApprovalError::Invalid(format!(
                    "{} is not a grant",
                    self.id
                )));
            }
        };
        if self.state != State::Approved || !self.grant_open(&fingerprint, now_us, ttl_us) {
            return Err(ApprovalError::Invalid(format!(
                "approval {} is {} and cannot be used",
                self.id,
                if self.used_us.is_some() {
                    "used already".to_string()
                } else {
                    self.state.to_string()
                }
            )));
        }
        self.used_us = Some(now_us);
        self.used_by = Some(session.to_string());
        Ok(())
    }

    /// Mark a one-time request held by a gateway that restarted; false if not pending.
    pub(crate) fn abandon(&mut self, now_us: i64) -> bool {
        if self.state != State::Pending {
            return false;
        }
        self.close(State::Abandoned, now_us);
        self.closed_reason = Some(ABANDONED_REASON.to_string());
        true
    }

    fn close(&mut self, state: State, now_us: i64) {
        self.state = state;
        self.closed_us = Some(now_us);
    }

    /// Names of those who voted `approve`.
    pub(crate) fn voters(&self, approve: bool) -> Vec<&str> {
        self.votes
            .iter()
            .filter(|v| v.approve == approve)
            .map(|v| v.display_name.as_deref().unwrap_or(&v.who))
            .collect()
    }

    /// What the held client (or the CLI) reads about this request's outcome.
    pub fn outcome_message(&self) -> String {
        let id = &self.id;
        match self.state {
            State::Pending => format!(
                "approval {id} is pending: {} of {} approvals",
                self.approvals(),
                self.required
            ),
            State::Approved => format!(
                "approval {id} was approved by {}",
                self.voters(true).join(", ")
            ),
            State::Denied => {
                let deny = self.votes.iter().find(|v| !v.approve);
                let who = deny.map(|v| v.display_name.as_deref().unwrap_or(&v.who));
                let mut s = format!(
                    "approval {id} was denied by {}",
                    who.unwrap_or("a reviewer")
                );
                if let Some(r) = deny.and_then(|v| v.reason.as_deref()) {
                    s.push_str(&format!(": {r}"));
                }
                s
            }
            State::Expired => format!(
                "approval {id} expired with {} of {} approvals",
                self.approvals(),
                self.required
            ),
            State::Cancelled => {
                let mut s = format!("approval {id} was cancelled");
                if let Some(r) = &self.closed_reason {
                    s.push_str(&format!(": {r}"));
                }
                s
            }
            State::Abandoned => format!("approval {id} was abandoned: {ABANDONED_REASON}"),
        }
    }
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
