//! Commands held for approval: requested, waited on by the proxy, then resolved.

use super::{Admitted, Batch, Gated, Record, Refusal, Review, SessionGate, Waiting};
use crate::approvals::{ApprovalRequest, NewKind, NewRequest, Outcome, State};
use crate::audit::Verdict as AuditVerdict;

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
        let who = approvers(r);
        format!(
            "{action} held for approval {id}: {n} approval(s) needed from {who}; \
             approve with `portcullis approvals approve {id}`",
            id = r.id,
            n = r.required,
        )
    }

    /// The policies that sent it to review.
    pub fn policies(&self) -> &[String] {
        &self.record.policies
    }

    /// The Cedar action held.
    pub fn action(&self) -> &str {
        &self.record.action
    }
}

/// Who may approve `r`, for the requester to read.
fn approvers(r: &ApprovalRequest) -> String {
    if r.approver_groups.is_empty() {
        "anyone else".to_string()
    } else {
        format!("members of {}", r.approver_groups.join(", "))
    }
}

impl SessionGate {
    /// Request the approval `review` needs: [`Gated::Hold`] while people decide, or a
    /// recorded refusal when it cannot be requested.
    /// For a command that waits by [`Waiting::Retry`] there is no hold: its grant is used
    /// when approved ([`Gated::Forward`]), else it is refused naming the grant it waits for.
    pub async fn hold(&self, review: Box<Review>) -> Gated {
        if review.waiting == Waiting::Retry {
            return self.grant(*review).await;
        }
        let Review {
            number,
            record,
            decision,
            fingerprint,
            parameters,
            ..
        } = *review;
        let new = NewRequest::new(
            NewKind::OneTime {
                fingerprint,
                statement: record.text.clone(),
                session: self.session_id.clone(),
                parameters,
                tables: record.tables.clone(),
                grant: false,
            },
            &self.connection,
            &record.action,
        )
        .with_review(&decision);
        match self.services.approvals.request(&self.identity, new).await {
            Ok(request) => Gated::Hold(Box::new(Held {
                number,
                request,
                record,
            })),
            Err(e) => {
                let reason = format!(
                    "approval required ({}), but it could not be requested: {e}",
                    decision.reason.as_deref().unwrap_or("policy")
                );
                Gated::Refuse(self.refuse_now(number, record, reason, None, false))
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
        let message = outcome.message();
        record.reason = Some(message.clone());
        if !outcome.is_approved() {
            return Err(self.refuse_now(number, record, message, Some(request.id), false));
        }
        let policies = record.policies.clone();
        let mut batch = Batch::default();
        batch.events.push(self.event(
            number,
            record,
            AuditVerdict::Allow,
            Some(request.id.clone()),
        ));
        match self.commit(&mut batch) {
            Ok(_) => Ok(Admitted {
                number,
                approval: Some(request.id),
                policies,
            }),
            Err(reason) => Err(Refusal {
                number,
                action: String::new(),
                message: reason.clone(),
                reason,
                policies: Vec::new(),
                withdrawn: false,
                approval: None,
            }),
        }
    }

    /// The client gave up on a held command (cancelled it, or left): the request is
    /// withdrawn and the command recorded as refused for `why`.
    pub async fn withdraw(&self, held: Box<Held>, why: &str) -> Refusal {
        let Held {
            number,
            request,
            mut record,
        } = *held;
        let _ = self
            .services
            .approvals
            .cancel_held(&request.id, &self.session_id, why)
            .await;
        let reason = format!("approval {} withdrawn: {why}", request.id);
        record.reason = Some(reason.clone());
        self.refuse_now(number, record, reason, Some(request.id), true)
    }

    /// A command that waits by retrying: run it on its approved grant, or refuse it naming
    /// the grant it waits for (requested now if there is none).
    async fn grant(&self, review: Review) -> Gated {
        let Review {
            number,
            mut record,
            decision,
            fingerprint,
            parameters,
            ..
        } = review;
        let approvals = &self.services.approvals;
        let open = approvals
            .open_grant(
                &self.identity,
                &self.connection,
                &record.action,
                &fingerprint,
            )
            .await;
        let action = record.action.clone();
        match open {
            Ok(Some(req)) if req.state == State::Approved => {
                match approvals.use_grant(&req.id, &self.session_id).await {
                    Ok(req) => {
                        record.reason = Some(req.outcome_message());
                        let policies = record.policies.clone();
                        let mut batch = Batch::default();
                        batch.events.push(self.event(
                            number,
                            record,
                            AuditVerdict::Allow,
                            Some(req.id.clone()),
                        ));
                        match self.commit(&mut batch) {
                            Ok(_) => Gated::Forward(Admitted {
                                number,
                                approval: Some(req.id),
                                policies,
                            }),
                            Err(reason) => Gated::Refuse(Refusal {
                                number,
                                action,
                                message: reason.clone(),
                                reason,
                                policies: Vec::new(),
                                withdrawn: false,
                                approval: Some(req.id),
                            }),
                        }
                    }
                    Err(e) => {
                        let reason = format!("approval {} could not be used: {e}", req.id);
                        Gated::Refuse(self.refuse_now(number, record, reason, Some(req.id), false))
                    }
                }
            }
            Ok(Some(req)) => {
                let reason = format!(
                    "{action} is waiting for approval {id} ({}); send it again once it is approved",
                    req.outcome_message(),
                    id = req.id,
                );
                Gated::Refuse(self.refuse_now(number, record, reason, Some(req.id), false))
            }
            Ok(None) => {
                let new = NewRequest::new(
                    NewKind::OneTime {
                        fingerprint,
                        statement: record.text.clone(),
                        session: self.session_id.clone(),
                        parameters,
                        tables: record.tables.clone(),
                        grant: true,
                    },
                    &self.connection,
                    &action,
                )
                .with_review(&decision);
                let reason = match approvals.request(&self.identity, new).await {
                    Ok(req) => {
                        let reason = format!(
                            "{action} needs approval {id}: {n} approval(s) needed from {who}; \
                             approve with `portcullis approvals approve {id}`, then send the \
                             same request again",
                            id = req.id,
                            n = req.required,
                            who = approvers(&req),
                        );
                        return Gated::Refuse(self.refuse_now(
                            number,
                            record,
                            reason,
                            Some(req.id),
                            false,
                        ));
                    }
                    Err(e) => format!(
                        "approval required ({}), but it could not be requested: {e}",
                        decision.reason.as_deref().unwrap_or("policy")
                    ),
                };
                Gated::Refuse(self.refuse_now(number, record, reason, None, false))
            }
            Err(e) => {
                let reason = format!("approvals are unavailable, so it cannot run: {e}");
                Gated::Refuse(self.refuse_now(number, record, reason, None, false))
            }
        }
    }

    /// Record a refusal (a failure to record it is counted and logged) and return it.
    fn refuse_now(
        &self,
        number: u64,
        record: Record,
        reason: String,
        approval: Option<String>,
        withdrawn: bool,
    ) -> Refusal {
        let refusal = Refusal {
            number,
            action: record.action.clone(),
            message: reason.clone(),
            reason,
            policies: record.policies.clone(),
            withdrawn,
            approval: approval.clone(),
        };
        let mut batch = Batch::default();
        batch
            .events
            .push(self.event(number, record, AuditVerdict::Deny, approval));
        let _ = self.commit(&mut batch);
        refusal
    }
}
