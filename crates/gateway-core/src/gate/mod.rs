//! The one step every proxy takes for every command: decide it, hold it for approval or
//! refuse it, and put it on record before a byte of it reaches the target.
//!
//! A session's [`SessionGate`] decides a command's actions ([`SessionGate::decide`]: the
//! session's credential first, then policy), and [`SessionGate::admit`] turns the decision into
//! one of three outcomes:
//!
//! - [`Gated::Forward`] with an [`Admitted`]: allowed (by policy, or by a granted time window
//!   standing in for review), and its `command` event is durable. Only the gate makes an
//!   `Admitted`, and forwarders take one as the proof that they may act.
//! - [`Gated::Hold`]: review is required and a one-time approval was requested. The proxy
//!   parks the command in its own way and, once the wait ends, hands the outcome to
//!   [`SessionGate::resolve`], which records the command and admits or refuses it.
//! - [`Gated::Refuse`] with a [`Refusal`] the proxy renders in its own wire form.
//!
//! Sessions open through [`Opening`]: the connection looked up among the protocol's own, the
//! `connect` decision, refusals recorded, and the start on record before the session exists.
//!
//! Each command gets one `command` event, written once its fate is known (a held command's
//! wait is on record as its approval request), carrying identity, connection and protocol.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::action::Action;
use crate::approvals::{ApprovalRequest, NewKind, NewRequest, Outcome};
use crate::audit::{AuditEvent, EventKind, IdentityRecord, Verdict as AuditVerdict};
use crate::config::Protocol;
use crate::identity::Identity;
use crate::identity::watch::CredentialWatch;
use crate::policy::{ConnectionRef, Decision, Verdict};
use crate::services::Services;

/// Longest wait for a command's audit event.
const RECORD_TIMEOUT: Duration = Duration::from_secs(10);

/// Proof that a command may reach its target: admitted and on record. Made only here.
#[derive(Debug)]
#[must_use = "an admitted command is forwarded, or its admission was wasted"]
pub struct Admitted {
    number: u64,
    approval: Option<String>,
    policies: Vec<String>,
}

impl Admitted {
    /// The command's number within its session (links `command` and `command_end`).
    pub fn number(&self) -> u64 {
        self.number
    }

    /// The approval or window that admitted it, if one did.
    pub fn approval(&self) -> Option<&str> {
        self.approval.as_deref()
    }

    /// The policies that allowed it.
    pub fn policies(&self) -> &[String] {
        &self.policies
    }
}

/// Why a command does not run, for the proxy to render in its wire form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The command's number within its session.
    pub number: u64,
    /// What the client reads (without a product prefix).
    pub message: String,
    /// The policies that refused it, if any did.
    pub policies: Vec<String>,
}

/// A command held for approval.
#[derive(Debug)]
#[must_use = "a held command is resolved, or its client is never answered"]
pub struct Held {
    pub number: u64,
    /// The approval request, as made.
    pub request: ApprovalRequest,
    record: Record,
}

impl Held {
    /// What the client reads while it waits.
    pub fn notice(&self, action: &str) -> String {
        let r = &self.request;
        let who = if r.approver_groups.is_empty() {
            "anyone else".to_string()
        } else {
            format!("members of {}", r.approver_groups.join(", "))
        };
        format!(
            "{action} held for approval {id}: {n} approval(s) needed from {who}; \
             approve with `portcullis approvals approve {id}`",
            id = r.id,
            n = r.required,
        )
    }
}

/// What became of a command at the gate.
#[derive(Debug)]
pub enum Gated {
    Forward(Admitted),
    Hold(Box<Held>),
    Refuse(Refusal),
}

/// One command as the proxy describes it to the gate.
#[derive(Debug, Clone)]
pub struct Command {
    /// What policy decides: one action, or several that must all pass.
    pub actions: Vec<Action>,
    /// The Cedar action id recorded for the command as a whole.
    pub action: String,
    /// The command's text as the client sent it (statement, exec line, `host:port`).
    pub text: String,
    /// Tables it touches (SQL).
    pub tables: Vec<String>,
    /// Bound parameter values for reviewers, already masked.
    pub parameters: Vec<Option<String>>,
    /// Anything else its audit event should carry.
    pub detail: Option<serde_json::Value>,
    /// Whether the proxy can park it for approval; when not (a forwarded port's
    /// connection), a rule asking for review refuses it instead.
    pub can_hold: bool,
}

impl Command {
    /// A command of one action, with nothing else known about it.
    pub fn new(action: Action, text: impl Into<String>) -> Command {
        Command {
            action: action.cedar_id().to_string(),
            actions: vec![action],
            text: text.into(),
            tables: Vec::new(),
            parameters: Vec::new(),
            detail: None,
            can_hold: true,
        }
    }
}

/// The event to write for a command, less its verdict.
#[derive(Debug)]
struct Record {
    action: String,
    text: String,
    tables: Vec<String>,
    detail: Option<serde_json::Value>,
    policies: Vec<String>,
    reason: Option<String>,
}

/// The gate of one session.
pub struct SessionGate {
    services: Arc<Services>,
    session_id: String,
    identity: Identity,
    connection: String,
    protocol: Protocol,
    credential: CredentialWatch,
    commands: AtomicU64,
}

impl SessionGate {
    /// The gate of a session that has started (its `session_start` is on record).
    pub fn new(
        services: Arc<Services>,
        session_id: &str,
        identity: Identity,
        connection: &str,
        protocol: Protocol,
    ) -> SessionGate {
        SessionGate {
            services,
            session_id: session_id.to_string(),
            identity,
            connection: connection.to_string(),
            protocol,
            credential: CredentialWatch::default(),
            commands: AtomicU64::new(0),
        }
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn credential(&self) -> &CredentialWatch {
        &self.credential
    }

    /// Commands numbered so far.
    pub fn commands(&self) -> u64 {
        self.commands.load(Ordering::Relaxed)
    }

    /// Decide `actions` (all must pass): refused outright once the session's token has
    /// expired or its access key no longer holds, else by policy. Counted in the metrics.
    pub fn decide(&self, actions: &[Action]) -> Decision {
        let refused = if crate::util::now_secs() > self.identity.expires_at {
            Some("the session's token has expired; reconnect with a fresh token".to_string())
        } else {
            self.credential
                .refusal(&self.services.verifier, &self.identity)
        };
        let decision = match refused {
            Some(reason) => Decision {
                verdict: Verdict::Deny,
                policies: Vec::new(),
                reason: Some(reason),
                policy_version: 0,
            },
            None => self.services.policy.current().decide_all(
                &self.identity,
                &ConnectionRef {
                    name: &self.connection,
                    protocol: self.protocol,
                },
                actions,
            ),
        };
        self.services
            .metrics
            .decided(self.protocol, &decision.verdict);
        decision
    }

    /// Decide `cmd`, and admit, hold or refuse it. Whatever is admitted or refused is on
    /// record first; if it cannot be recorded, it is refused (fail closed).
    pub async fn admit(&self, cmd: Command) -> Gated {
        let decision = self.decide(&cmd.actions);
        let number = self.commands.fetch_add(1, Ordering::Relaxed) + 1;
        let record = Record {
            action: cmd.action,
            text: cmd.text,
            tables: cmd.tables,
            detail: cmd.detail,
            policies: decision.policies.clone(),
            reason: decision.reason.clone(),
        };
        match &decision.verdict {
            Verdict::Allow(_) => self.admitted(number, record, None).await,
            Verdict::Deny => {
                let message = format!(
                    "{} denied by policy: {}",
                    record.action,
                    decision.reason.as_deref().unwrap_or("not permitted")
                );
                self.refused(number, record, message, None).await
            }
            Verdict::Review { .. } => {
                let approvals = &self.services.approvals;
                // A granted window stands in for review.
                if let Some(window) =
                    approvals.active_window(&self.identity, &self.connection, &record.action)
                {
                    return self.admitted(number, record, Some(window)).await;
                }
                if !cmd.can_hold {
                    let message = format!(
                        "{} needs approval, which this request cannot wait for",
                        record.action
                    );
                    return self.refused(number, record, message, None).await;
                }
                let new = NewRequest::new(
                    NewKind::OneTime {
                        fingerprint: crate::approvals::fingerprint(&record.text, &[]),
                        statement: record.text.clone(),
                        session: self.session_id.clone(),
                        parameters: cmd.parameters,
                        tables: record.tables.clone(),
                    },
                    &self.connection,
                    &record.action,
                )
                .with_review(&decision);
                match approvals.request(&self.identity, new).await {
                    Ok(request) => Gated::Hold(Box::new(Held {
                        number,
                        request,
                        record,
                    })),
                    Err(e) => {
                        let message = format!(
                            "approval required ({}), but it could not be requested: {e}",
                            decision.reason.as_deref().unwrap_or("policy")
                        );
                        self.refused(number, record, message, None).await
                    }
                }
            }
        }
    }

    /// The end of a held command's wait: admitted (and recorded) if approved, else refused.
    pub async fn resolve(&self, held: Box<Held>, outcome: &Outcome) -> Result<Admitted, Refusal> {
        let Held {
            number,
            request,
            mut record,
        } = *held;
        record.reason = Some(outcome.message());
        let gated = if outcome.is_approved() {
            self.admitted(number, record, Some(request.id)).await
        } else {
            let message = outcome.message();
            self.refused(number, record, message, Some(request.id))
                .await
        };
        match gated {
            Gated::Forward(a) => Ok(a),
            Gated::Refuse(r) => Err(r),
            // Neither path holds.
            Gated::Hold(h) => Err(Refusal {
                number: h.number,
                message: "approval could not be resolved".into(),
                policies: Vec::new(),
            }),
        }
    }

    async fn admitted(&self, number: u64, record: Record, approval: Option<String>) -> Gated {
        let policies = record.policies.clone();
        match self
            .record(number, record, AuditVerdict::Allow, approval.clone())
            .await
        {
            Ok(()) => Gated::Forward(Admitted {
                number,
                approval,
                policies,
            }),
            Err(e) => Gated::Refuse(Refusal {
                number,
                message: format!("audit is unavailable: {e}"),
                policies: Vec::new(),
            }),
        }
    }

    async fn refused(
        &self,
        number: u64,
        record: Record,
        message: String,
        approval: Option<String>,
    ) -> Gated {
        let policies = record.policies.clone();
        // Refused either way; a failure to record it is counted, not shown.
        if let Err(e) = self
            .record(number, record, AuditVerdict::Deny, approval)
            .await
        {
            tracing::error!(error = %e, session_id = %self.session_id, "a refused command could not be recorded");
        }
        Gated::Refuse(Refusal {
            number,
            message,
            policies,
        })
    }

    /// Write the command's event and wait until it is durable.
    async fn record(
        &self,
        number: u64,
        record: Record,
        verdict: AuditVerdict,
        approval: Option<String>,
    ) -> crate::error::Result<()> {
        let mut ev = AuditEvent::new(EventKind::Command, &self.session_id);
        ev.identity = Some(IdentityRecord::from(&self.identity));
        ev.connection = Some(self.connection.clone());
        ev.protocol = Some(self.protocol.as_str().to_string());
        ev.command = Some(number);
        ev.statement = Some(record.text);
        ev.action = Some(record.action);
        ev.tables = record.tables;
        ev.verdict = Some(verdict);
        ev.approval = approval;
        ev.policies = record.policies;
        ev.reason = record.reason;
        ev.detail = record.detail;
        let recorded = tokio::time::timeout(RECORD_TIMEOUT, self.services.audit.record(ev))
            .await
            .unwrap_or_else(|_| Err(crate::Error::Audit("timed out".into())));
        if recorded.is_err() {
            self.services
                .metrics
                .audit_failures_total
                .fetch_add(1, Ordering::Relaxed);
        }
        recorded.map(|_| ())
    }
}

mod open;
#[cfg(test)]
mod tests;

pub use open::{Admission, OpenRefusal, Opening};
