//! A command held for approval inside the live session.

use super::*;

impl Upstream<'_> {
    /// Hold a command for approval: request it, tell the client, and wait for the outcome, a
    /// cancel, or the client leaving. Returns the plan for the command either way; its audit
    /// event (with the approval id) is queued with it.
    pub(super) async fn hold<R: AsyncRead + Unpin>(
        &mut self,
        h: Held,
        client: &mut R,
        buf: &mut BytesMut,
        notices: &UnboundedSender<Bytes>,
        events: &mut Vec<AuditEvent>,
    ) -> Result<Plan> {
        let ctx = self.ctx;
        let approvals = &ctx.services.approvals;
        let Held {
            command,
            statements,
            text,
            action,
            decision,
            mut event,
            fingerprint,
            parameters,
            tables,
        } = h;
        let detail = format!(
            "{action} on connection \"{}\" held by policy [{}]",
            ctx.conn.name,
            decision.policies.join(", ")
        );
        let new = NewRequest::new(
            NewKind::OneTime {
                fingerprint,
                statement: text,
                session: ctx.session_id.clone(),
                parameters,
                tables,
            },
            &ctx.conn.name,
            action,
        )
        .with_review(&decision);
        let req = match approvals.request(ctx.identity(), new).await {
            Ok(r) => r,
            Err(e) => {
                let message = format!("portcullis: approval could not be requested: {e}");
                event.verdict = Some(gateway_core::audit::Verdict::Deny);
                event.reason = Some(message.clone());
                events.push(event);
                return Ok(refuse("42501", &message, &detail));
            }
        };
        event.approval = Some(req.id.clone());
        let who = if req.approver_groups.is_empty() {
            "anyone else".to_string()
        } else {
            format!("members of {}", req.approver_groups.join(", "))
        };
        let message = format!(
            "portcullis: statement held for approval {id}: {n} approval(s) needed from {who}; \
             approve with `portcullis approvals approve {id}`, or cancel to withdraw it",
            id = req.id,
            n = req.required,
        );
        let mut notice = BytesMut::with_capacity(64 + message.len() + detail.len());
        codec::put_notice(&mut notice, "NOTICE", "01000", &message, Some(&detail));
        let _ = notices.send(notice.freeze());
        ctx.hold.set(Some(req.id.clone()));
        let wait = approvals.wait(&req.id);
        tokio::pin!(wait);
        let outcome = loop {
            let read_more = buf.len() < MAX_READ_WHILE_HELD;
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(READ_CHUNK);
            }
            tokio::select! {
                o = &mut wait => break Some(o),
                _ = ctx.hold.cancelled() => break None,
                r = client.read_buf(buf), if read_more => match r {
                    Ok(n) if n > 0 => {}
                    _ => {
                        ctx.hold.set(None);
                        let _ = approvals
                            .cancel_held(&req.id, &ctx.session_id, "the client disconnected while the statement was held")
                            .await;
                        return Err(PgError::Client(format!(
                            "the client disconnected while statement was held for approval {}",
                            req.id
                        )));
                    }
                },
            }
        };
        ctx.hold.set(None);
        let plan = match outcome {
            Some(Outcome::Approved(r)) => {
                event.verdict = Some(gateway_core::audit::Verdict::Allow);
                event.reason = Some(r.outcome_message());
                Plan::Command {
                    command,
                    statements,
                }
            }
            Some(o) => {
                let message = format!("portcullis: {}", o.message());
                event.verdict = Some(gateway_core::audit::Verdict::Deny);
                event.reason = Some(message.clone());
                refuse("42501", &message, &detail)
            }
            None => {
                let _ = approvals
                    .cancel_held(&req.id, &ctx.session_id, "cancelled by the client")
                    .await;
                let message = "canceling statement due to user request";
                event.verdict = Some(gateway_core::audit::Verdict::Deny);
                event.reason = Some(format!("approval {} cancelled by the client", req.id));
                refuse(
                    "57014",
                    message,
                    &format!("approval {} was cancelled", req.id),
                )
            }
        };
        events.push(event);
        Ok(plan)
    }
}
