//! The one step every proxy takes for every command: decide it, hold it for approval or
//! refuse it, and put it on record before a byte of it reaches the target.
//!
//! A session's [`SessionGate`] decides a command's actions ([`SessionGate::decide`]: the
//! session's credential first, then policy), and turns the decision into one of three
//! outcomes:
//!
//! - **Forward**, with an [`Admitted`]: allowed (by policy, or by a granted time window
//!   standing in for review), and its `command` event is durable. Only the gate makes an
//!   `Admitted`, and forwarders take one as the proof that they may act.
//! - **Hold**: review is required. The gate requests a one-time approval bound to the
//!   command's fingerprint ([`SessionGate::hold`]); the proxy parks the command in its own
//!   way and, once the wait ends, hands the outcome to [`SessionGate::resolve`] (or, when the
//!   client gives up, [`SessionGate::withdraw`]), which records the command and admits or
//!   refuses it.
//! - **Refuse**, with a [`Refusal`] the proxy renders in its own wire form.
//!
//! Two ways in, one set of rules:
//! - [`SessionGate::admit`] takes one command and returns once its fate is on record
//!   ([`Gated`]). Request/response and channel protocols (SSH, HTTP) use it.
//! - [`SessionGate::stage`] decides a command into a [`Batch`] without waiting; the proxy
//!   stages every command that has arrived, then [`SessionGate::commit`]s the batch with one
//!   journal write, and only then turns each [`Pending`] into its [`Admitted`]. Pipelining
//!   protocols (PostgreSQL) use it, so a burst of commands costs one write.
//!
//! Sessions open through [`Opening`]: the connection looked up among the protocol's own, the
//! `connect` decision, refusals recorded, and the start on record before the session exists.
//!
//! Each command gets one `command` event, written once its fate is known (a held command's
//! wait is on record as its approval request), carrying identity, connection and protocol.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::action::Action;
use crate::audit::{AuditEvent, EventKind, IdentityRecord, Verdict as AuditVerdict};
use crate::config::Protocol;
use crate::identity::Identity;
use crate::identity::watch::CredentialWatch;
use crate::policy::{ConnectionRef, Decision, Verdict};
use crate::services::Services;

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
    /// The Cedar action refused.
    pub action: String,
    /// What the client reads (without a product prefix): the action and why.
    pub message: String,
    /// Why, on its own: the rule's reason, the approval's outcome, or the failure.
    pub reason: String,
    /// The policies that refused it, if any did.
    pub policies: Vec<String>,
    /// Whether the client withdrew it while it was held.
    pub withdrawn: bool,
    /// The approval it waits for or that refused it, if any: a request/response client
    /// sends the same command again once it is approved (see [`Review`]).
    pub approval: Option<String>,
}

/// How a proxy lets a command wait for review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// Parked in the live session until people decide (SQL sessions, SSH channels).
    Hold,
    /// Not parked: the first request asks for a grant bound to the command's fingerprint and
    /// is refused with its id; the same command sent again by the same identity once the
    /// grant is approved runs, once (HTTP, Kubernetes).
    Retry,
    /// It cannot wait (a forwarded port's connection): a rule asking for review refuses it.
    Never,
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
    /// What an approval is bound to, when more than the text (bound parameter values):
    /// see [`approvals::fingerprint`](crate::approvals::fingerprint).
    pub fingerprint: Option<String>,
    /// Anything else its audit event should carry.
    pub detail: Option<serde_json::Value>,
    /// How it may wait for review.
    pub waiting: Waiting,
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
            fingerprint: None,
            detail: None,
            waiting: Waiting::Hold,
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
    /// What every event of the session says about who and where, shared.
    record: Arc<IdentityRecord>,
    connection: Arc<str>,
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
            record: Arc::new(IdentityRecord::from(&identity)),
            identity,
            connection: Arc::from(connection),
            protocol,
            credential: CredentialWatch::default(),
            commands: AtomicU64::new(0),
        }
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The session's id, as its events carry it.
    pub fn session_id(&self) -> &str {
        &self.session_id
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
        let mut batch = Batch::default();
        match self.stage(cmd, &decision, &mut batch) {
            Staged::Forward(pending) => match self.commit(&mut batch) {
                Ok(on_record) => Gated::Forward(pending.admit(&on_record)),
                Err(reason) => Gated::Refuse(pending.unrecorded(reason)),
            },
            Staged::Refuse(refusal) => {
                // Refused either way; a failure to record it is counted and logged.
                let _ = self.commit(&mut batch);
                Gated::Refuse(refusal)
            }
            Staged::Review(review) => self.hold(review).await,
        }
    }

    /// The `command` event of command `number`.
    fn event(
        &self,
        number: u64,
        record: Record,
        verdict: AuditVerdict,
        approval: Option<String>,
    ) -> AuditEvent {
        let mut ev = AuditEvent::new(EventKind::Command, &self.session_id);
        ev.identity = Some(self.record.clone());
        ev.connection = Some(self.connection.clone());
        ev.protocol = Some(Cow::Borrowed(self.protocol.as_str()));
        ev.command = Some(number);
        ev.statement = Some(record.text);
        ev.action = Some(record.action);
        ev.tables = record.tables;
        ev.verdict = Some(verdict);
        ev.approval = approval;
        ev.policies = record.policies;
        ev.reason = record.reason;
        ev.detail = record.detail;
        ev
    }

    /// The `command_end` event of command `number`, naming its connection and protocol,
    /// for the proxy to fill with the outcome (duration, rows, error) and record. Who ran it
    /// is on its `command` event, linked by session and number.
    pub fn complete(&self, number: u64) -> AuditEvent {
        let mut ev = AuditEvent::new(EventKind::CommandEnd, &self.session_id);
        ev.connection = Some(self.connection.clone());
        ev.protocol = Some(Cow::Borrowed(self.protocol.as_str()));
        ev.command = Some(number);
        ev
    }

    /// The session's `session_end` event, naming who and where, for the proxy to fill with
    /// how it ended and record.
    pub fn end(&self) -> AuditEvent {
        let mut ev = AuditEvent::new(EventKind::SessionEnd, &self.session_id);
        ev.identity = Some(self.record.clone());
        ev.connection = Some(self.connection.clone());
        ev.protocol = Some(Cow::Borrowed(self.protocol.as_str()));
        ev
    }

    fn next_number(&self) -> u64 {
        self.commands.fetch_add(1, Ordering::Relaxed) + 1
    }
}

mod batch;
mod hold;
mod open;
#[cfg(test)]
mod tests;

pub use batch::{Batch, OnRecord, Pending, Review, Staged};
pub use hold::Held;
pub use open::{Admission, OpenRefusal, Opening};
