//! A logged-in session: each client request (SQL batch, RPC, transaction-manager request) is
//! decided by the gate (see `describe`) and, when admitted, forwarded; the target's answer is
//! relayed packet by packet as it arrives, and its end recorded. A refused request is answered
//! by the gateway itself (an ERROR token and a DONE); the target never sees it. The session's
//! prepared handles are kept in step with what is forwarded and what the answers return.

use std::time::Instant;

use bytes::{Buf, BytesMut};
use gateway_core::approvals::Outcome;
use gateway_core::gate::{Admitted, Gated, Held, Refusal};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::codec::messages::{Done, EnvChange, ServerMessage, done_status};
use crate::codec::packet::{self, Message, MessageReader};
use crate::codec::write::{self, DoneKind};
use crate::ctx::SessionCtx;
use crate::describe::{Described, describe, own_use};
use crate::error::{Result, TdsError};
use crate::prepared::Handles;
use crate::results::{Ended, InFlight, Responses};
use crate::stream::Stream;

/// Largest request message accepted (a batch's text, an RPC's parameters).
const MAX_REQUEST: usize = 64 << 20;

/// Client bytes buffered at most while a request waits for approval.
const MAX_READ_WHILE_HELD: usize = 1 << 20;

pub(crate) async fn run(
    ctx: &SessionCtx,
    client: Stream,
    mut cbuf: BytesMut,
    target: Stream,
    tbuf: BytesMut,
) -> Result<()> {
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut tr, mut tw) = tokio::io::split(target);
    let mut requests = MessageReader::new(ctx.packet_size, MAX_REQUEST);
    let mut resp = Responses::new(tbuf, ctx.masks.clone());
    let mut out = BytesMut::with_capacity(ctx.packet_size * 2);
    let mut ended = Vec::new();
    let mut handles = Handles::new();
    loop {
        // Requests already here.
        while let Some(m) = requests.next(&mut cbuf).map_err(TdsError::client_codec)? {
            let io = Io {
                cr: &mut cr,
                cbuf: &mut cbuf,
                cw: &mut cw,
                tw: &mut tw,
            };
            request(ctx, m, io, &mut resp, &mut handles).await?;
        }
        if cbuf.capacity() - cbuf.len() < 4096 {
            cbuf.reserve(16 * 1024);
        }
        if resp.packets.capacity() - resp.packets.len() < 4096 {
            resp.packets.reserve(32 * 1024);
        }
        tokio::select! {
            r = cr.read_buf(&mut cbuf) => {
                let n = match r {
                    Ok(n) => n,
                    // Clients (FreeTDS among them) often close TLS without close_notify:
                    // between messages that is an ordinary close, not a broken session.
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && cbuf.is_empty() => 0,
                    Err(e) => return Err(TdsError::client_io(e)),
                };
                if n == 0 {
                    let _ = tw.shutdown().await;
                    return Ok(());
                }
            }
            r = tr.read_buf(&mut resp.packets) => {
                if r.map_err(TdsError::target_io)? == 0 {
                    return Err(TdsError::Target("the target closed the connection".into()));
                }
                let relayed = resp.relay(ctx.packet_size, &mut out, &mut ended);
                for e in ended.drain(..) {
                    complete(ctx, e, &mut handles);
                }
                if !out.is_empty() {
                    cw.write_all(&out).await.map_err(TdsError::client_io)?;
                    out.clear();
                }
                relayed?;
            }
        }
    }
}

/// Record the end of an answer: how long it took, its rows and first error, what masking did;
/// and the handle a preparing call got.
fn complete(ctx: &SessionCtx, e: Ended, handles: &mut Handles) {
    let Ended {
        flight,
        rows,
        error,
        masked,
        handle,
    } = e;
    if let Some(p) = flight.prepare {
        match handle {
            Some(h) => handles.insert(p.space, h, p.prepared),
            // A handle may have been handed out that the gateway cannot name: none is
            // trusted any more.
            None => handles.clear(),
        }
    }
    let elapsed = flight.started.elapsed();
    ctx.services.metrics.statement_latency.observe(elapsed);
    let mut ev = ctx.gate.complete(flight.number);
    ev.duration_us = Some(elapsed.as_micros() as u64);
    ev.rows = rows;
    ev.error = error;
    if let Some(masked) = masked {
        ev.detail = Some(serde_json::json!({ "masked": masked }));
    }
    let audit = ctx.services.audit.clone();
    tokio::spawn(async move {
        let _ = audit.record_later(ev).await;
    });
}

/// The client's and the target's halves of the session, as a request needs them.
struct Io<'a, R, C, T> {
    cr: &'a mut R,
    cbuf: &'a mut BytesMut,
    cw: &'a mut C,
    tw: &'a mut T,
}

/// Decide one request and forward it, or answer it.
async fn request<R, C, T>(
    ctx: &SessionCtx,
    m: Message,
    io: Io<'_, R, C, T>,
    resp: &mut Responses,
    handles: &mut Handles,
) -> Result<()>
where
    R: AsyncRead + Unpin,
    C: AsyncWrite + Unpin,
    T: AsyncWrite + Unpin,
{
    let Io { cr, cbuf, cw, tw } = io;
    if m.ty == packet::ATTENTION {
        // A cancel: straight to the target, which ends its answer with DONE_ATTN.
        return forward(ctx, &m, tw).await;
    }
    if m.is_ignored() {
        // The client gave up on this message before its end: the target would ignore it and
        // answer with a lone DONE, so the gateway does.
        let mut payload = BytesMut::with_capacity(16);
        write::write_done(&mut payload, DoneKind::Done, &Done::with_status(0));
        return answer(ctx, cw, &payload, true).await;
    }
    let Described {
        cmd,
        lineage,
        handles: effect,
    } = match describe(ctx, &m, handles) {
        Ok(d) => d,
        Err(why) => return answer_refusal(ctx, cw, &why).await,
    };
    // `USE` of the database the client is in (drivers send it after login): the gateway
    // answers it, since the target's database may have another name.
    if cmd.action == "sql.session" && own_use(&cmd.text, &ctx.database) {
        return match ctx.gate.admit(cmd).await {
            Gated::Forward(_) => {
                let mut payload = BytesMut::with_capacity(64);
                let db = EnvChange::Database {
                    new: ctx.database.clone(),
                    old: ctx.database.clone(),
                };
                write::write_env_change(&mut payload, &db).map_err(TdsError::client_codec)?;
                write::write_done(&mut payload, DoneKind::Done, &Done::with_status(0));
                answer(ctx, cw, &payload, true).await
            }
            Gated::Refuse(r) => answer_refusal(ctx, cw, &refusal_text(&r)).await,
            Gated::Hold(held) => {
                let r = ctx.gate.withdraw(held, "a USE is not held").await;
                answer_refusal(ctx, cw, &refusal_text(&r)).await
            }
        };
    }
    let gated = ctx.gate.admit(cmd).await;
    let admitted = match gated {
        Gated::Forward(a) => a,
        Gated::Refuse(r) => return answer_refusal(ctx, cw, &refusal_text(&r)).await,
        Gated::Hold(held) => match hold(ctx, held, cr, cbuf, cw).await? {
            HoldEnd::Admitted(a) => a,
            HoldEnd::Refused(text) => return answer_refusal(ctx, cw, &text).await,
            HoldEnd::Withdrawn => return Ok(()),
        },
    };
    // What reaches the target changes its handles: a reset drops them all.
    if m.resets_connection() || effect.clear {
        handles.clear();
    }
    for (space, h) in effect.drops {
        handles.remove(space, h);
    }
    let mut prepare = effect.pending;
    if resp.inflight.is_some() {
        // Sent before the last answer ended: answers cannot be told apart, so no handle is
        // taken from them.
        handles.clear();
        prepare = None;
    }
    resp.inflight = Some(InFlight {
        number: admitted.number(),
        started: Instant::now(),
        lineage,
        prepare,
    });
    forward(ctx, &m, tw).await
}

fn refusal_text(r: &Refusal) -> String {
    format!("portcullis: {}", r.message)
}

/// How a held request's wait ended.
enum HoldEnd {
    Admitted(Admitted),
    Refused(String),
    /// The client cancelled it; its Attention is answered.
    Withdrawn,
}

/// Hold a request for approval: an INFO message tells the client at once (in an answer
/// left open), then the wait; a client's Attention withdraws it.
async fn hold<R, C>(
    ctx: &SessionCtx,
    held: Box<Held>,
    cr: &mut R,
    cbuf: &mut BytesMut,
    cw: &mut C,
) -> Result<HoldEnd>
where
    R: AsyncRead + Unpin,
    C: AsyncWrite + Unpin,
{
    let notice = format!(
        "portcullis: {}; send an attention (cancel) to withdraw it",
        held.notice("batch")
    );
    let mut payload = BytesMut::with_capacity(128 + notice.len() * 2);
    let _ = write::write_info(&mut payload, &ServerMessage::from_gateway(0, 0, &notice));
    // Not the answer's end: the answer follows.
    answer(ctx, cw, &payload, false).await?;
    let id = held.request.id.clone();
    let wait = ctx.services.approvals.wait(&id);
    tokio::pin!(wait);
    let outcome: Option<Outcome> = loop {
        if cbuf.capacity() - cbuf.len() < 1024 {
            cbuf.reserve(4096);
        }
        let read_more = cbuf.len() < MAX_READ_WHILE_HELD;
        tokio::select! {
            o = &mut wait => break Some(o),
            r = cr.read_buf(cbuf), if read_more => match r {
                Ok(n) if n > 0 => {
                    // An Attention packet withdraws the held request.
                    if cbuf.first() == Some(&packet::ATTENTION) {
                        break None;
                    }
                }
                _ => {
                    let _ = ctx.gate.withdraw(held, "the client disconnected while the batch was held").await;
                    return Err(TdsError::Client(format!(
                        "the client disconnected while a batch was held for approval {id}"
                    )));
                }
            },
        }
    };
    Ok(match outcome {
        Some(o) => match ctx.gate.resolve(held, &o).await {
            Ok(a) => HoldEnd::Admitted(a),
            Err(r) => HoldEnd::Refused(refusal_text(&r)),
        },
        None => {
            // The Attention is answered here: the request never reached the target.
            if let Some(len) = packet::whole_packet_len(cbuf).ok().flatten() {
                cbuf.advance(len);
            }
            let r = ctx.gate.withdraw(held, "cancelled by the client").await;
            let mut payload = BytesMut::new();
            let attn = Done::with_status(done_status::ATTN);
            write::write_done(&mut payload, DoneKind::Done, &attn);
            answer(ctx, cw, &payload, true).await?;
            tracing::info!(reason = %r.reason, "held batch withdrawn");
            HoldEnd::Withdrawn
        }
    })
}

/// Send a request to the target as the client framed it (its packet status kept).
async fn forward<T: AsyncWrite + Unpin>(ctx: &SessionCtx, m: &Message, tw: &mut T) -> Result<()> {
    let mut out = BytesMut::with_capacity(m.payload.len() + 64);
    packet::put_message(
        &mut out,
        m.ty,
        &m.payload,
        ctx.packet_size,
        m.status & !packet::STATUS_EOM,
    );
    tw.write_all(&out).await.map_err(TdsError::target_io)
}

/// Answer a refused request with an ERROR (permission denied, class 14) and a final DONE.
async fn answer_refusal<C: AsyncWrite + Unpin>(
    ctx: &SessionCtx,
    cw: &mut C,
    text: &str,
) -> Result<()> {
    let mut payload = BytesMut::with_capacity(128 + text.len() * 2);
    // A gateway message is cut to fit, so this cannot fail.
    let _ = write::write_refusal(&mut payload, &ServerMessage::from_gateway(229, 14, text));
    answer(ctx, cw, &payload, true).await
}

/// Send the client an answer the gateway wrote itself; `last` false leaves it open (more of
/// the answer follows).
async fn answer<C: AsyncWrite + Unpin>(
    ctx: &SessionCtx,
    cw: &mut C,
    payload: &[u8],
    last: bool,
) -> Result<()> {
    let mut out = BytesMut::with_capacity(payload.len() + 16);
    packet::put_message_part(
        &mut out,
        packet::TABULAR_RESULT,
        payload,
        ctx.packet_size,
        0,
        last,
    );
    cw.write_all(&out).await.map_err(TdsError::client_io)
}
