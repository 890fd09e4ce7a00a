//! A command held for approval inside the live session.

use super::*;

impl Upstream<'_> {
    /// Hold a command for approval: the gate requests it, the client is told, and the
    /// session waits for the outcome, a cancel, or the client leaving. Returns the plan for
    /// the command either way; the gate has its event on record by then.
    pub(super) async fn hold<R: AsyncRead + Unpin>(
        &mut self,
        review: Box<Review>,
        statements: usize,
        client: &mut R,
        buf: &mut BytesMut,
        notices: &UnboundedSender<Bytes>,
    ) -> Result<Plan> {
        let ctx = self.ctx;
        let refused_detail = |action: &str, policies: &[String]| {
            format!(
                "{action} on connection \"{}\" held by policy [{}]",
                ctx.conn.name,
                policies.join(", ")
            )
        };
        let held = match ctx.gate.hold(review).await {
            Gated::Hold(held) => held,
            Gated::Refuse(r) => {
                let detail = refused_detail(&r.action, &r.policies);
                return Ok(refuse(
                    "42501",
                    &format!("portcullis: {}", r.message),
                    &detail,
                ));
            }
            Gated::Forward(admitted) => {
                return Ok(Plan::Command {
                    ticket: Ticket::Admitted(admitted),
                    statements,
                });
            }
        };
        let detail = refused_detail(held.action(), held.policies());
        let id = held.request.id.clone();
        let message = format!(
            "portcullis: {}, or cancel to withdraw it",
            held.notice("statement")
        );
        let mut notice = BytesMut::with_capacity(64 + message.len() + detail.len());
        codec::put_notice(&mut notice, "NOTICE", "01000", &message, Some(&detail));
        let _ = notices.send(notice.freeze());
        ctx.hold.set(Some(id.clone()));
        let wait = ctx.services.approvals.wait(&id);
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
                        let _ = ctx
                            .gate
                            .withdraw(held, "the client disconnected while the statement was held")
                            .await;
                        return Err(PgError::Client(format!(
                            "the client disconnected while statement was held for approval {id}"
                        )));
                    }
                },
            }
        };
        ctx.hold.set(None);
        Ok(match outcome {
            Some(outcome) => match ctx.gate.resolve(held, &outcome).await {
                Ok(admitted) => Plan::Command {
                    ticket: Ticket::Admitted(admitted),
                    statements,
                },
                Err(r) => refuse("42501", &format!("portcullis: {}", r.message), &detail),
            },
            None => {
                let _ = ctx.gate.withdraw(held, "cancelled by the client").await;
                refuse(
                    "57014",
                    "canceling statement due to user request",
                    &format!("approval {id} was cancelled"),
                )
            }
        })
    }
}
