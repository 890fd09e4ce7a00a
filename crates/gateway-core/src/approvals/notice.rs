//! What the outside hears about a request: its audit events and its webhook bodies. All link
//! to the one approval id.

use std::sync::Arc;

use serde_json::{Value, json};

use super::model::{ApprovalKind, ApprovalRequest, State, Vote};
use crate::audit::event::{AuditEvent, EventKind, IdentityRecord, Verdict};

/// Longest statement quoted in a chat message; reviewers open the request for the rest.
const SLACK_STATEMENT_MAX: usize = 600;

/// Event fields every approval event shares.
fn base(kind: EventKind, req: &ApprovalRequest, identity: &IdentityRecord) -> AuditEvent {
    let session = match &req.kind {
        ApprovalKind::OneTime { session, .. } => session.as_str(),
        ApprovalKind::Window { .. } => "",
    };
    let mut ev = AuditEvent::new(kind, session);
    ev.identity = Some(Arc::new(identity.clone()));
    ev.connection = Some(req.connection.as_str().into());
    ev.action = Some(req.action.clone());
    ev.approval = Some(req.id.clone());
    ev.policies = req.policies.clone();
    ev
}

/// `approval_request`: who asked for what, under which rule.
pub(crate) fn request_event(req: &ApprovalRequest) -> AuditEvent {
    let mut ev = base(EventKind::ApprovalRequest, req, &req.requester);
    ev.verdict = Some(Verdict::Review);
    ev.reason = req.reason.clone();
    let mut detail = json!({
        "type": req.kind.tag(),
        "required": req.required,
        "approvers": req.approver_groups,
        "expires_us": req.expires_us,
    });
    match &req.kind {
        ApprovalKind::OneTime {
            fingerprint,
            statement,
            parameters,
            tables,
            ..
        } => {
            ev.statement = Some(statement.clone());
            ev.tables = tables.clone();
            detail["fingerprint"] = json!(fingerprint);
            if !parameters.is_empty() {
                detail["parameters"] = json!(parameters);
            }
        }
        ApprovalKind::Window { window_secs } => detail["window_secs"] = json!(window_secs),
    }
    ev.detail = Some(detail);
    ev
}

/// `approval_vote`: the voter is the event's identity; allow = approve, deny = deny.
pub(crate) fn vote_event(req: &ApprovalRequest, vote: &Vote, voter: &IdentityRecord) -> AuditEvent {
    let mut ev = base(EventKind::ApprovalVote, req, voter);
    ev.time_us = vote.at_us;
    ev.verdict = Some(if vote.approve {
        Verdict::Allow
    } else {
        Verdict::Deny
    });
    ev.reason = vote.reason.clone();
    ev.detail = Some(json!({"approvals": req.approvals(), "required": req.required}));
    ev
}

/// `approval_outcome`: the request's final state, recorded under the requester.
pub(crate) fn outcome_event(req: &ApprovalRequest) -> AuditEvent {
    let mut ev = base(EventKind::ApprovalOutcome, req, &req.requester);
    ev.verdict = Some(if req.state == State::Approved {
        Verdict::Allow
    } else {
        Verdict::Deny
    });
    ev.reason = Some(req.outcome_message());
    let mut detail = json!({
        "state": req.state.as_str(),
        "approvers": req.voters(true),
    });
    if let Some(u) = req.window_until_us {
        detail["window_until_us"] = json!(u);
    }
    if let Some(by) = &req.closed_by {
        detail["closed_by"] = json!(by);
    }
    ev.detail = Some(detail);
    ev
}

/// Generic webhook name of a request's current state: `approval.requested`,
/// `approval.approved`, `approval.denied`, ...
pub(crate) fn event_name(req: &ApprovalRequest) -> String {
    match req.state {
        State::Pending => "approval.requested".to_string(),
        s => format!("approval.{}", s.as_str()),
    }
}

/// The generic JSON body.
pub(crate) fn json_body(req: &ApprovalRequest) -> Value {
    json!({"event": event_name(req), "request": req})
}

/// Slack's mrkdwn treats `&`, `<` and `>` as markup.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn who(r: &IdentityRecord) -> String {
    match &r.display_name {
        Some(n) => format!("{} ({})", n, r.principal),
        None => r.principal.clone(),
    }
}

/// A Slack incoming-webhook body: `{"text": ...}`.
pub(crate) fn slack_body(req: &ApprovalRequest) -> Value {
    let id = &req.id;
    let what = match &req.kind {
        ApprovalKind::OneTime { statement, .. } => {
            let mut s: String = statement.chars().take(SLACK_STATEMENT_MAX).collect();
            if s.len() < statement.len() {
                s.push('…');
            }
            // A fence inside the statement would end the code block early.
            format!("```{}```", slack_escape(&s).replace("```", "'''"))
        }
        ApprovalKind::Window { window_secs } => {
            format!("a {} window for `{}`", human_secs(*window_secs), req.action)
        }
    };
    let text = match req.state {
        State::Pending => {
            let mut t = format!(
                "Approval `{id}` requested by {} on `{}` ({}):\n{what}\n",
                slack_escape(&who(&req.requester)),
                slack_escape(&req.connection),
                slack_escape(&req.action),
            );
            if let Some(r) = &req.reason {
                t.push_str(&format!("Reason: {}\n", slack_escape(r)));
            }
            let from = if req.approver_groups.is_empty() {
                String::new()
            } else {
                format!(" from {}", slack_escape(&req.approver_groups.join(", ")))
            };
            t.push_str(&format!(
                "Needs {} approval{}{from}.\nApprove: `portcullis approvals approve {id}`  Deny: `portcullis approvals deny {id} --reason TEXT`",
                req.required,
                if req.required == 1 { "" } else { "s" },
            ));
            t
        }
        _ => format!(
            "{} ({} on `{}` by {}).",
            slack_escape(&req.outcome_message()),
            slack_escape(&req.action),
            slack_escape(&req.connection),
            slack_escape(&who(&req.requester)),
        ),
    };
    json!({ "text": text })
}

/// `90s`, `30m`, `8h` style, as in the config.
pub(crate) fn human_secs(s: u64) -> String {
    match s {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
