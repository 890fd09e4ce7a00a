//! A logged-in session: each client request (SQL batch, RPC, transaction-manager request) is
//! decided by the gate and, when admitted, forwarded; the target's answer is relayed packet
//! by packet as it arrives, and its end recorded. A refused request is answered by the
//! gateway itself (an ERROR token and a DONE); the target never sees it.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use gateway_core::action::{Action, SqlKind, SqlStatement};
use gateway_core::approvals::Outcome;
use gateway_core::gate::{Admitted, Command, Gated, Held, Refusal};
use gateway_core::sql::{Dialect, LexOptions};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::codec::messages::{Done, EnvChange, ServerMessage, done_status};
use crate::codec::packet::{self, Message, MessageReader};
use crate::codec::request::{self, ProcRef, Rpc, SqlBatch};
use crate::codec::write::{self, DoneKind};
use crate::error::{Result, TdsError};
use crate::results::{Ended, InFlight, Lineage, Responses};
use crate::session::SessionCtx;
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
    loop {
        // Requests already here.
        while let Some(m) = requests.next(&mut cbuf).map_err(TdsError::client_codec)? {
            request(ctx, m, &mut cr, &mut cbuf, &mut cw, &mut tw, &mut resp).await?;
        }
        if cbuf.capacity() - cbuf.len() < 4096 {
            cbuf.reserve(16 * 1024);
        }
        if resp.packets.capacity() - resp.packets.len() < 4096 {
            resp.packets.reserve(32 * 1024);
        }
        tokio::select! {
            r = cr.read_buf(&mut cbuf) => {
                if r.map_err(TdsError::client_io)? == 0 {
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
                    complete(ctx, e);
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

/// Record the end of an answer: how long it took, its rows and first error, what masking did.
fn complete(ctx: &SessionCtx, e: Ended) {
    let elapsed = e.flight.started.elapsed();
    ctx.services.metrics.statement_latency.observe(elapsed);
    let mut ev = ctx.gate.complete(e.flight.number);
    ev.duration_us = Some(elapsed.as_micros() as u64);
    ev.rows = e.rows;
    ev.error = e.error;
    if let Some(masked) = e.masked {
        ev.detail = Some(serde_json::json!({ "masked": masked }));
    }
    let audit = ctx.services.audit.clone();
    tokio::spawn(async move {
        let _ = audit.record_later(ev).await;
    });
}

/// Decide one request and forward it, or answer it.
#[allow(clippy::too_many_arguments)]
async fn request<R, C, T>(
    ctx: &SessionCtx,
    m: Message,
    cr: &mut R,
    cbuf: &mut BytesMut,
    cw: &mut C,
    tw: &mut T,
    resp: &mut Responses,
) -> Result<()>
where
    R: AsyncRead + Unpin,
    C: AsyncWrite + Unpin,
    T: AsyncWrite + Unpin,
{
    if m.ty == packet::ATTENTION {
        // A cancel: straight to the target, which ends its answer with DONE_ATTN.
        return forward(ctx, &m, tw).await;
    }
    let (cmd, lineage) = match describe(ctx, &m) {
        Ok(c) => c,
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
    resp.inflight = Some(InFlight {
        number: admitted.number(),
        started: Instant::now(),
        lineage,
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

/// What the gate decides for a request: its statements, or why it cannot be decided.
fn describe(ctx: &SessionCtx, m: &Message) -> std::result::Result<(Command, Lineage), String> {
    let classify = |text: &str| {
        ctx.services.classifier.classify(
            text,
            LexOptions {
                dialect: Dialect::TSql,
                ..LexOptions::default()
            },
        )
    };
    let (text, statements): (String, Vec<Arc<SqlStatement>>) = match m.ty {
        packet::SQL_BATCH => {
            let b = SqlBatch::parse(&m.payload)
                .map_err(|e| format!("portcullis: the batch cannot be read: {e}"))?;
            if own_use(&b.text, &ctx.database) {
                // Staying where it is: a session statement, answered by the gateway.
                let mut s = (*unknown("use ?", Vec::new())).clone();
                s.kind = SqlKind::Session;
                s.parsed = true;
                (b.text, vec![Arc::new(s)])
            } else {
                let s = classify(&b.text).to_vec();
                (b.text, s)
            }
        }
        packet::RPC => {
            let rpc = Rpc::parse(&m.payload).map_err(|e| {
                format!("portcullis: the RPC cannot be read, so it is refused: {e}")
            })?;
            match (rpc.statement(), &rpc.proc) {
                (Some(stmt), _) => {
                    let s = classify(stmt).to_vec();
                    (stmt.to_string(), s)
                }
                (None, ProcRef::Name(name)) => {
                    let name = name.to_lowercase();
                    (
                        format!("EXEC {name}"),
                        vec![unknown(&format!("exec {name}"), vec![name])],
                    )
                }
                (None, ProcRef::Id(id)) => {
                    let shape = format!("<system procedure {id}>");
                    (shape.clone(), vec![unknown(&shape, Vec::new())])
                }
            }
        }
        packet::TRANS_MGR => {
            let t = request::TransMgr::parse(&m.payload)
                .map_err(|e| format!("portcullis: the transaction request cannot be read: {e}"))?;
            let text = t.describe();
            let s = classify(&text).to_vec();
            (text, s)
        }
        other => {
            return Err(format!(
                "portcullis: requests of type {other:#04x} are not supported through the gateway"
            ));
        }
    };
    let lineage = match &ctx.masks {
        Some(masks) => Lineage {
            mentioned: masks.mentioned_rule(&text),
            touched: masks.touched_rule(
                statements
                    .iter()
                    .flat_map(|s| s.tables.iter())
                    .map(String::as_str),
            ),
            outputs: match statements.as_slice() {
                [only] => only.outputs.clone(),
                _ => None,
            },
        },
        None => Lineage::default(),
    };
    let worst = SqlStatement::worst_kind(&statements);
    let tables = SqlStatement::tables_of(&statements);
    let mut cmd = Command::new(Action::Sql(unknown("", Vec::new())), text);
    cmd.actions = statements.into_iter().map(Action::Sql).collect();
    if cmd.actions.is_empty() {
        cmd.actions.push(Action::Sql(unknown("", Vec::new())));
    }
    cmd.action = worst.cedar_id().to_string();
    cmd.tables = tables;
    Ok((cmd, lineage))
}

/// Whether `text` is `USE <database>` of `database` (bare, bracketed or quoted).
fn own_use(text: &str, database: &str) -> bool {
    let t = text.trim().trim_end_matches(';').trim_end();
    let Some((word, rest)) = t.split_once(char::is_whitespace) else {
        return false;
    };
    if !word.eq_ignore_ascii_case("use") {
        return false;
    }
    let name = rest.trim();
    let name = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .or_else(|| name.strip_prefix('"').and_then(|n| n.strip_suffix('"')))
        .unwrap_or(name);
    name.eq_ignore_ascii_case(database)
}

/// A statement the gateway cannot analyse (a procedure called by name: policy can name it
/// in `functions`).
fn unknown(shape: &str, functions: Vec<String>) -> Arc<SqlStatement> {
    Arc::new(SqlStatement {
        kind: SqlKind::Unknown,
        tables: Vec::new(),
        unbounded: false,
        shape: shape.to_string(),
        functions,
        parsed: false,
        refusal: None,
        outputs: None,
    })
}
