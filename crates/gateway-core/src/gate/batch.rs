//! Commands decided together and put on record with one journal write.

use std::sync::atomic::Ordering;

use super::{Admitted, Command, Record, Refusal, SessionGate, Waiting};
use crate::audit::{AuditEvent, Verdict as AuditVerdict};
use crate::policy::{Decision, Verdict};

/// The events of the commands staged since the last commit.
#[derive(Debug, Default)]
pub struct Batch {
    pub(super) events: Vec<AuditEvent>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// Proof that a batch's events are on record.
#[derive(Debug)]
pub struct OnRecord {
    seq: Option<u64>,
}

impl OnRecord {
    /// The chain position of the batch's last event (`None` for an empty batch).
    pub fn seq(&self) -> Option<u64> {
        self.seq
    }
}

/// A command allowed into a batch: admitted once the batch is on record.
#[derive(Debug)]
#[must_use = "a staged command is admitted once its batch is committed"]
pub struct Pending {
    admitted: Admitted,
}

impl Pending {
    pub fn number(&self) -> u64 {
        self.admitted.number
    }

    /// The admission, now that the batch holding its event is on record.
    pub fn admit(self, _on_record: &OnRecord) -> Admitted {
        self.admitted
    }

    /// The refusal when its batch could not be recorded.
    pub fn unrecorded(self, reason: String) -> Refusal {
        Refusal {
            number: self.admitted.number,
            action: String::new(),
            message: reason.clone(),
            reason,
            policies: Vec::new(),
            withdrawn: false,
            approval: None,
        }
    }
}

/// A command policy sends to review, no window covers, and its proxy can park: its
/// approval is requested by [`SessionGate::hold`].
#[derive(Debug)]
#[must_use = "a command under review is held, or its client is never answered"]
pub struct Review {
    pub(super) number: u64,
    pub(super) record: Record,
    pub(super) decision: Decision,
    pub(super) fingerprint: String,
    pub(super) parameters: Vec<Option<String>>,
    pub(super) waiting: Waiting,
}

impl Review {
    pub fn number(&self) -> u64 {
        self.number
    }
}

/// What became of a command staged into a batch.
#[derive(Debug)]
pub enum Staged {
    /// Allowed; its event is in the batch.
    Forward(Pending),
    /// Held for review; nothing is in the batch yet.
    Review(Box<Review>),
    /// Refused; its event is in the batch.
    Refuse(Refusal),
}

impl SessionGate {
    /// Number `cmd` and turn `decision` (from [`decide`](Self::decide)) into its outcome,
    /// adding its event to `batch` when its fate is already known.
    pub fn stage(&self, cmd: Command, decision: &Decision, batch: &mut Batch) -> Staged {
        let number = self.next_number();
        let fingerprint = cmd.fingerprint;
        let record = Record {
            action: cmd.action,
            text: cmd.text,
            tables: cmd.tables,
            detail: cmd.detail,
            policies: decision.policies.clone(),
            reason: decision.reason.clone(),
        };
        let approval = match &decision.verdict {
            Verdict::Allow(_) => None,
            Verdict::Deny => {
                let reason = decision
                    .reason
                    .clone()
                    .unwrap_or_else(|| "not permitted".to_string());
                let message = format!("{} denied by policy: {reason}", record.action);
                return Staged::Refuse(self.refuse_into(batch, number, record, message, reason));
            }
            Verdict::Review { .. } => {
                // A granted window stands in for review.
                let window = self.services.approvals.active_window(
                    &self.identity,
                    &self.connection,
                    &record.action,
                );
                match window {
                    Some(window) => Some(window),
                    None if cmd.waiting != Waiting::Never => {
                        // Only a reviewed command needs one: what its approval is bound to.
                        let fingerprint = fingerprint
                            .unwrap_or_else(|| crate::approvals::fingerprint(&record.text, &[]));
                        return Staged::Review(Box::new(Review {
                            number,
                            record,
                            decision: decision.clone(),
                            fingerprint,
                            parameters: cmd.parameters,
                            waiting: cmd.waiting,
                        }));
                    }
                    None => {
                        let reason = "it needs approval, which this request cannot wait for";
                        let message = format!(
                            "{} needs approval, which this request cannot wait for",
                            record.action
                        );
                        return Staged::Refuse(self.refuse_into(
                            batch,
                            number,
                            record,
                            message,
                            reason.to_string(),
                        ));
                    }
                }
            }
        };
        let policies = record.policies.clone();
        batch
            .events
            .push(self.event(number, record, AuditVerdict::Allow, approval.clone()));
        Staged::Forward(Pending {
            admitted: Admitted {
                number,
                approval,
                policies,
            },
        })
    }

    fn refuse_into(
        &self,
        batch: &mut Batch,
        number: u64,
        record: Record,
        message: String,
        reason: String,
    ) -> Refusal {
        let refusal = Refusal {
            number,
            action: record.action.clone(),
            message,
            reason,
            policies: record.policies.clone(),
            withdrawn: false,
            approval: None,
        };
        batch
            .events
            .push(self.event(number, record, AuditVerdict::Deny, None));
        refusal
    }

    /// Write the batch's events and return once they are durable (one journal write, synced
    /// in fsync mode). An Err means nothing in it may run: the audit is unavailable.
    pub fn commit(&self, batch: &mut Batch) -> Result<OnRecord, String> {
        if batch.events.is_empty() {
            return Ok(OnRecord { seq: None });
        }
        let audit = &self.services.audit;
        let events = std::mem::take(&mut batch.events);
        match audit
            .stage(events)
            .and_then(|seq| audit.flush(seq).map(|()| seq))
        {
            Ok(seq) => Ok(OnRecord { seq: Some(seq) }),
            Err(e) => {
                self.services
                    .metrics
                    .audit_failures_total
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, session_id = %self.session_id, "commands could not be recorded");
                Err(format!("audit is unavailable, so no command can run: {e}"))
            }
        }
    }
}
