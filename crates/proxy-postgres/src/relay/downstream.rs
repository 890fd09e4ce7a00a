//! Target → client: relay results in batches, swap the substitute's error for the
//! refusal's, confirm prepared statements and portals, and record each command's end.

use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;

use bytes::{Bytes, BytesMut};
use gateway_core::Side;
use gateway_core::audit::AuditEvent;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::results::{Results, Step, Wait, is_completion};
use super::state::Shared;
use super::{Fatal, MAX_TARGET_MESSAGE, READ_CHUNK};
use crate::codec::Frame;
use crate::codec::{self, tags::backend as be};
use crate::ctx::SessionCtx;
use crate::error::{PgError, Result};
use crate::mask::Masking;

pub(super) async fn run<R, W>(
    ctx: &SessionCtx,
    shared: &Mutex<Shared>,
    target: &mut R,
    mut buf: BytesMut,
    client: &mut W,
    mut fatal: oneshot::Receiver<Fatal>,
    mut notices: mpsc::UnboundedReceiver<Bytes>,
) -> Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut out = BytesMut::with_capacity(READ_CHUNK);
    let mut ends: Vec<AuditEvent> = Vec::new();
    let mut fatal_open = true;
    let mut notices_open = true;
    // Masking, only when a block applies to this session.
    let mut masking = ctx.masks.clone().map(|m| Results::new(Masking::new(m)));
    // A frame that waits for the catalog (taken up again once `wait` is done).
    let mut held: Option<Frame> = None;
    let mut wait: Option<Wait> = None;
    loop {
        if let (Some(r), Some(w)) = (masking.as_mut(), wait.take()) {
            r.run_wait(ctx, w).await;
        }
        let audit_seq;
        {
            let mut sh = shared.lock().unwrap_or_else(|e| e.into_inner());
            // Every command answered in this batch was staged at or before this seq.
            audit_seq = sh.audit_seq;
            loop {
                let frame =
                    match held.take() {
                        Some(f) => f,
                        None => match codec::next_frame(&mut buf, MAX_TARGET_MESSAGE).map_err(
                            |err| PgError::Codec {
                                side: Side::Target,
                                err,
                            },
                        )? {
                            Some(f) => f,
                            None => break,
                        },
                    };
                let mut written = false;
                if let Some(r) = masking.as_mut() {
                    match r.frame(&mut sh, &frame, &mut out)? {
                        Step::Pass => {}
                        Step::Written => {
                            if !is_completion(frame.tag) {
                                continue;
                            }
                            written = true;
                        }
                        Step::Wait(w) => {
                            held = Some(frame);
                            wait = Some(w);
                            break;
                        }
                    }
                }
                match frame.tag {
                    be::ERROR => {
                        let fields = codec::parse_error_fields(frame.body()).ok();
                        let substitute = fields.as_ref().is_some_and(|f| {
                            f.code == "42601" && f.message.contains(sh.marker.as_str())
                        });
                        if substitute && let Some(sub) = sh.substitutes.pop_front() {
                            out.extend_from_slice(&sub.error);
                            continue;
                        }
                        let mut msg = fields
                            .map(|f| format!("{}: {}", f.code, f.message))
                            .unwrap_or_else(|| "error".into());
                        if let Some(r) = masking.as_ref() {
                            // The audit trail gets what the client got, never a value.
                            msg = r.m.masked_text(&msg);
                        }
                        let pushed = complete(ctx, &mut sh, &mut ends, None, Some(msg));
                        attach_counts(&mut masking, &mut ends, pushed);
                    }
                    be::COMMAND_COMPLETE => {
                        let rows = codec::parse_command_complete(frame.body())
                            .ok()
                            .and_then(codec::rows_from_tag);
                        let refused = masking.as_mut().and_then(|r| r.take_refused_copy());
                        let pushed = complete(ctx, &mut sh, &mut ends, rows, refused);
                        attach_counts(&mut masking, &mut ends, pushed);
                    }
                    be::EMPTY_QUERY | be::PORTAL_SUSPENDED | be::FUNCTION_CALL_RESPONSE => {
                        let pushed = complete(ctx, &mut sh, &mut ends, None, None);
                        attach_counts(&mut masking, &mut ends, pushed);
                    }
                    be::PARSE_COMPLETE | be::BIND_COMPLETE | be::CLOSE_COMPLETE => {
                        sh.confirm(frame.tag)
                    }
                    be::READY => {
                        let status = codec::parse_ready_for_query(frame.body()).unwrap_or(b'I');
                        let done = sh.batches_done;
                        // Commands of this batch that never completed were skipped after an error.
                        while sh.inflight.front().is_some_and(|f| f.batch <= done) {
                            complete(ctx, &mut sh, &mut ends, None, Some("not executed".into()));
                        }
                        sh.batch_done(status);
                        if let Some(r) = masking.as_mut() {
                            r.batch_done();
                        }
                    }
                    be::PARAMETER_STATUS => {
                        if let Ok((k, v)) = codec::parse_parameter_status(frame.body()) {
                            sh.track_parameter(k, v);
                        }
                    }
                    _ => {}
                }
                if !written {
                    out.extend_from_slice(&frame.raw);
                }
            }
        }
        // Completions are on record before the client sees them, and survive a client that
        // has gone away.
        for ev in ends.drain(..) {
            if ctx.services.audit.record_later(ev).await.is_err() {
                ctx.services
                    .metrics
                    .audit_failures_total
                    .fetch_add(1, Relaxed);
            }
        }
        if !out.is_empty() {
            // A command's results reach the client only once its event is written.
            if let Err(e) = ctx.services.audit.flush(audit_seq) {
                ctx.services
                    .metrics
                    .audit_failures_total
                    .fetch_add(1, Relaxed);
                return Err(PgError::Gateway(format!(
                    "audit is unavailable, so results cannot be delivered: {e}"
                )));
            }
            client.write_all(&out).await.map_err(PgError::client_io)?;
            out.clear();
        }
        if wait.is_some() {
            // The held frame needs the catalog first; what was before it is already out.
            continue;
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_CHUNK);
        }
        tokio::select! {
            read = target.read_buf(&mut buf) => {
                if read.map_err(PgError::target_io)? == 0 {
                    return Err(PgError::Target("the target closed the connection".into()));
                }
            }
            // A notice from the client half, written between whole messages.
            n = notices.recv(), if notices_open => match n {
                Some(n) => client.write_all(&n).await.map_err(PgError::client_io)?,
                None => notices_open = false,
            },
            // The other half ended the session: tell the client why, at a message boundary.
            f = &mut fatal, if fatal_open => {
                fatal_open = false;
                if let Ok(f) = f {
                    let mut msg = BytesMut::new();
                    codec::put_error(&mut msg, "FATAL", f.code, &f.message, None, None);
                    let _ = client.write_all(&msg).await;
                    return Ok(());
                }
            }
        }
    }
}

/// Record the completion of the oldest in-flight command of the batch being answered.
fn complete(
    ctx: &SessionCtx,
    sh: &mut Shared,
    ends: &mut Vec<AuditEvent>,
    rows: Option<u64>,
    error: Option<String>,
) -> bool {
    // A completion for something not tracked (an error at Sync, say) is not attributed to
    // a command of a later batch.
    if sh
        .inflight
        .front()
        .is_none_or(|f| f.batch > sh.batches_done)
    {
        return false;
    }
    let Some(f) = sh.inflight.pop_front() else {
        return false;
    };
    if f.command == 0 {
        return false;
    }
    let elapsed = f.started.elapsed();
    ctx.services.metrics.statement_latency.observe(elapsed);
    let mut ev = ctx.gate.complete(f.command);
    ev.duration_us = Some(elapsed.as_micros() as u64);
    ev.rows = rows;
    ev.error = error;
    ends.push(ev);
    true
}

/// Put what masking did for the command just completed into its `command_end` event.
fn attach_counts(masking: &mut Option<Results>, ends: &mut [AuditEvent], pushed: bool) {
    let Some(r) = masking.as_mut() else { return };
    if pushed
        && !r.m.counts.is_empty()
        && let Some(ev) = ends.last_mut()
    {
        let counts = r.m.counts.render(r.m.masks.column_rule_names());
        ev.detail = Some(serde_json::json!({ "masked": counts }));
    }
    r.m.counts.clear();
}
