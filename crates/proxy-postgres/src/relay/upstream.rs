//! Client → target: frame what the client sent, classify and decide each command, make its
//! audit event durable, then forward the whole batch in one write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use gateway_core::Side;
use gateway_core::action::{Action, SqlStatement};
use gateway_core::gate::{
    Admitted, Batch, Command, Gated, OnRecord, Pending, Review, Staged, Waiting,
};
use gateway_core::masking::SessionMasks;
use gateway_core::policy::{Decision, Verdict};
use gateway_core::sql::LexOptions;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedSender;

use super::READ_CHUNK;
use super::review::shown_parameters;
use super::state::{
    InFlight, MAX_NAMES, Name, PendingOp, Prepared, ResultSource, Shared, Substitute, name_key,
};
use crate::codec::{self, Frame, tags::frontend as fe};
use crate::ctx::SessionCtx;
use crate::error::{PgError, Result};

/// What to do with one client frame.
enum Plan {
    /// Forward as is; carries no command (Bind, Describe, Sync, CopyData...).
    Raw,
    /// Forward; a command with `statements` completions expected, admitted by the gate.
    Command { ticket: Ticket, statements: usize },
    /// Forward; an empty query (one EmptyQueryResponse, nothing to audit).
    Empty,
    /// Refused: send the substitute instead and swap its error for `error`. A refused
    /// Parse keeps the client's statement name, so the target's unnamed statement is
    /// replaced as it would have been.
    Refuse {
        error: Bytes,
        parse_name: Option<String>,
    },
    /// Policy sends it to review and no granted window covers it: hold it in the session
    /// until people decide.
    Hold {
        review: Box<Review>,
        statements: usize,
    },
}

/// The gate's admission of a forwarded command.
enum Ticket {
    /// Its event is in the batch being assembled: admitted once the batch is on record.
    Staged(Pending),
    /// Admitted already (after a hold, its event written when the wait ended).
    Admitted(Admitted),
}

impl Ticket {
    fn admit(self, on_record: &OnRecord) -> Admitted {
        match self {
            Ticket::Staged(p) => p.admit(on_record),
            Ticket::Admitted(a) => a,
        }
    }
}

/// A command refused by the proxy itself, whatever policy says: its results could not be
/// masked.
struct Veto {
    code: &'static str,
    message: &'static str,
    detail: &'static str,
}

/// Per-session state of the client → target direction.
struct Upstream<'a> {
    ctx: &'a SessionCtx,
    /// What the target will hold once everything sent so far has run: decisions for
    /// pipelined commands are made against it.
    statements: HashMap<Name, Arc<Prepared>>,
    portals: HashMap<Name, Arc<Prepared>>,
    /// A command of the current extended-protocol batch was refused: like PostgreSQL after
    /// an error, drop everything up to the next Sync.
    skip_until_sync: bool,
    /// Operations to register as pending when the batch is forwarded.
    ops: Vec<PendingOp>,
    /// The target's `standard_conforming_strings` and whether its client encoding is unsafe
    /// to lex (see [`Shared`]).
    standard_conforming_strings: bool,
    unsafe_encoding: bool,
    /// The last Bind seen (portal name and the whole message): a held Execute's parameters
    /// are part of what is approved.
    last_bind: Option<(Name, Bytes)>,
    /// The Bind of the Execute being decided, if it was the last one seen.
    bind_for_hold: Option<Bytes>,
    /// Result formats each portal was bound with (kept only while masking applies).
    portal_formats: HashMap<Name, Arc<[i16]>>,
    /// The statements of the simple Query just decided, for masking to reuse.
    query_statements: Option<Arc<[Arc<SqlStatement>]>>,
}

/// Client bytes read ahead while a statement is held, at most (reading stops there).
const MAX_READ_WHILE_HELD: usize = 1 << 20;

pub(super) async fn run<R, W>(
    ctx: &SessionCtx,
    shared: &Mutex<Shared>,
    client: &mut R,
    mut buf: BytesMut,
    target: &mut W,
    notices: UnboundedSender<Bytes>,
) -> Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut up = Upstream {
        ctx,
        statements: HashMap::new(),
        portals: HashMap::new(),
        skip_until_sync: false,
        ops: Vec::new(),
        standard_conforming_strings: true,
        unsafe_encoding: false,
        last_bind: None,
        bind_for_hold: None,
        portal_formats: HashMap::new(),
        query_statements: None,
    };
    let mut out = BytesMut::with_capacity(READ_CHUNK);
    let mut batch = Batch::default();
    let mut pending: Vec<(Frame, Plan, Option<PendingOp>, Extra)> = Vec::new();
    let max = ctx.max_message;
    loop {
        up.resync(shared);
        let mut terminate = false;
        // Frame everything that is already here; decide each command.
        while let Some(frame) = codec::next_frame(&mut buf, max).map_err(|err| PgError::Codec {
            side: Side::Client,
            err,
        })? {
            if frame.tag == fe::TERMINATE {
                terminate = true;
                break;
            }
            if up.skip_until_sync && frame.tag != fe::SYNC {
                continue;
            }
            let mut plan = up.decide(shared, &frame, &mut batch)?;
            if let Plan::Hold { review, statements } = plan {
                // What came before goes out first, so its results reach the client while
                // this one waits.
                send(ctx, shared, &mut batch, &mut pending, &mut out, target).await?;
                plan = up
                    .hold(review, statements, client, &mut buf, &notices)
                    .await?;
            }
            let extra = match &ctx.masks {
                Some(masks) => up.mask_extra(masks, &frame, &plan),
                None => Extra::None,
            };
            match (&plan, frame.tag) {
                (_, fe::SYNC) => up.skip_until_sync = false,
                (Plan::Refuse { .. }, fe::PARSE | fe::EXECUTE) => up.skip_until_sync = true,
                _ => {}
            }
            let op = up.ops.pop();
            pending.push((frame, plan, op, extra));
        }
        send(ctx, shared, &mut batch, &mut pending, &mut out, target).await?;
        if terminate {
            let mut x = BytesMut::with_capacity(5);
            codec::put_terminate(&mut x);
            let _ = target.write_all(&x).await;
            return Ok(());
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_CHUNK);
        }
        let n = client
            .read_buf(&mut buf)
            .await
            .map_err(PgError::client_io)?;
        if n == 0 {
            let _ = target.shutdown().await;
            return Ok(());
        }
    }
}

/// Commit the batch's audit events (one journal write, synced in fsync mode), then forward
/// the pending frames in one write. No byte of a command reaches the target before its
/// event is written, so a crash at any instant cannot leave an executed command without its
/// event. Group commit still applies: one journal write carries whatever every session has
/// staged.
async fn send<W: AsyncWrite + Unpin>(
    ctx: &SessionCtx,
    shared: &Mutex<Shared>,
    batch: &mut Batch,
    pending: &mut Vec<(Frame, Plan, Option<PendingOp>, Extra)>,
    out: &mut BytesMut,
    target: &mut W,
) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let started = (!batch.is_empty()).then(Instant::now);
    let on_record = ctx.gate.commit(batch).map_err(PgError::Gateway)?;
    if let Some(started) = started {
        ctx.services
            .metrics
            .decision_latency
            .observe(started.elapsed());
    }
    {
        let mut sh = shared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(seq) = on_record.seq() {
            sh.audit_seq = seq;
        }
        for (frame, plan, op, extra) in pending.drain(..) {
            forward(&mut sh, frame, plan, op, extra, &on_record, out);
        }
    }
    target.write_all(out).await.map_err(PgError::target_io)?;
    out.clear();
    Ok(())
}

impl Upstream<'_> {
    /// When nothing is in flight, take the target's confirmed view where the optimistic
    /// one may have gone wrong (a skipped Parse or Bind, portals dropped at commit).
    fn resync(&mut self, shared: &Mutex<Shared>) {
        let mut sh = shared.lock().unwrap_or_else(|e| e.into_inner());
        // How the target lexes SQL, as last reported; read once per batch of client frames.
        self.standard_conforming_strings = sh.standard_conforming_strings;
        self.unsafe_encoding = sh.unsafe_encoding;
        if sh.batches_sent != sh.batches_done {
            return;
        }
        if sh.statements_diverged {
            self.statements = sh.statements.clone();
            self.portals = sh.portals.clone();
            sh.statements_diverged = false;
            sh.portals_dropped = false;
        } else if sh.portals_dropped {
            self.portals.clear();
            sh.portals_dropped = false;
        }
    }

    /// Classify and decide one frame, queueing its audit event.
    fn decide(&mut self, shared: &Mutex<Shared>, frame: &Frame, batch: &mut Batch) -> Result<Plan> {
        let bad = |err| PgError::Codec {
            side: Side::Client,
            err,
        };
        let (scs, unsafe_encoding) = (self.standard_conforming_strings, self.unsafe_encoding);
        let classifier = &self.ctx.services.classifier;
        let classify = |text: &str| -> Arc<[Arc<SqlStatement>]> {
            if unsafe_encoding {
                return Prepared::unknown(String::new()).statements.clone();
            }
            classifier.classify(
                text,
                LexOptions {
                    standard_conforming_strings: scs,
                    ..LexOptions::default()
                },
            )
        };
        match frame.tag {
            fe::QUERY => {
                let text = codec::parse_query(frame.body()).map_err(bad)?;
                let statements = classify(text);
                if self.ctx.masks.is_some() {
                    self.query_statements = Some(statements.clone());
                }
                // A simple Query destroys the unnamed statement.
                self.statements.remove(&name_key(""));
                if statements.is_empty() {
                    return Ok(Plan::Empty);
                }
                if statements
                    .iter()
                    .any(|s| s.shape.starts_with("deallocate") || s.shape.starts_with("discard"))
                {
                    // Statements dropped behind the protocol's back: forget them all so a
                    // stale name can never be trusted.
                    self.statements.clear();
                    self.portals.clear();
                    shared
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .forget_all();
                }
                Ok(self.decide_statements(text, &statements, batch))
            }
            fe::PARSE => {
                let p = codec::parse_parse(frame.body()).map_err(bad)?;
                let statements = classify(p.query);
                let key = name_key(p.name);
                if !statements.is_empty() {
                    // Only what policy allows now (or sends to review) may be prepared on the
                    // target; each Execute is decided again, and a reviewed one held there.
                    let decision = self.evaluate(&statements);
                    if !decision.is_allowed() && !matches!(decision.verdict, Verdict::Review { .. })
                    {
                        let plan = self.record(p.query, &statements, decision, None, batch);
                        if p.name.is_empty() {
                            self.statements.remove(&key);
                        }
                        return Ok(match plan {
                            Plan::Refuse { error, .. } => Plan::Refuse {
                                error,
                                parse_name: Some(p.name.to_string()),
                            },
                            other => other,
                        });
                    }
                }
                if !p.name.is_empty() && self.statements.contains_key(&key) {
                    // The target refuses a duplicate name and keeps the old statement;
                    // so does this view.
                    return Ok(Plan::Raw);
                }
                if self.statements.len() >= MAX_NAMES {
                    return Err(PgError::Client(format!(
                        "more than {MAX_NAMES} prepared statements in one session"
                    )));
                }
                let prepared = Arc::new(Prepared::new(Arc::from(p.query), statements.clone()));
                self.statements.insert(key.clone(), prepared.clone());
                self.ops.push(PendingOp::Parse(key, prepared));
                Ok(Plan::Raw)
            }
            fe::BIND => {
                let b = codec::parse_bind(frame.body()).map_err(bad)?;
                let key = name_key(b.portal);
                let prepared = match self.statements.get(&name_key(b.statement)) {
                    Some(p) => p.clone(),
                    None => Prepared::unknown(format!(
                        "<statement \"{}\" not prepared through the gateway>",
                        b.statement
                    )),
                };
                if self.portals.len() >= MAX_NAMES && !self.portals.contains_key(&key) {
                    return Err(PgError::Client(format!(
                        "more than {MAX_NAMES} portals in one session"
                    )));
                }
                self.portals.insert(key.clone(), prepared.clone());
                self.last_bind = Some((key.clone(), frame.raw.clone()));
                self.ops.push(PendingOp::Bind(key, prepared));
                Ok(Plan::Raw)
            }
            fe::EXECUTE => {
                let (portal, _) = codec::parse_execute(frame.body()).map_err(bad)?;
                let p = match self.portals.get(&name_key(portal)) {
                    Some(p) => p.clone(),
                    // A portal not bound through this session (a cursor from SQL, say):
                    // nothing to classify, so it is unknown, never a read.
                    None => Prepared::unknown(format!("<execute of portal \"{portal}\">")),
                };
                if p.statements.is_empty() {
                    return Ok(Plan::Empty);
                }
                let params = self
                    .last_bind
                    .as_ref()
                    .filter(|(name, _)| **name == *name_key(portal))
                    .map(|(_, raw)| raw.clone());
                self.bind_for_hold = params;
                Ok(
                    match self.decide_statements(&p.text, &p.statements, batch) {
                        // One Execute, one completion, whatever the statement count.
                        Plan::Command { ticket, .. } => Plan::Command {
                            ticket,
                            statements: 1,
                        },
                        Plan::Hold { review, .. } => Plan::Hold {
                            review,
                            statements: 1,
                        },
                        other => other,
                    },
                )
            }
            fe::CLOSE => {
                let (kind, name) = codec::parse_close(frame.body()).map_err(bad)?;
                let key = name_key(name);
                if kind == b'S' {
                    self.statements.remove(&key);
                } else {
                    self.portals.remove(&key);
                }
                self.ops.push(PendingOp::Close(kind, key));
                Ok(Plan::Raw)
            }
            fe::FUNCTION_CALL => {
                // The fast-path interface runs server functions by OID (lo_import and
                // friends use it): nothing to classify, so it is unknown.
                let p = Prepared::unknown("<fast-path function call>".into());
                Ok(self.decide_statements(&p.text, &p.statements, batch))
            }
            fe::DESCRIBE | fe::SYNC | fe::FLUSH | fe::COPY_DATA | fe::COPY_DONE | fe::COPY_FAIL => {
                Ok(Plan::Raw)
            }
            other => Err(PgError::Client(format!(
                "unexpected message type `{}` from client",
                char::from(other)
            ))),
        }
    }

    fn evaluate(&self, statements: &[Arc<SqlStatement>]) -> Decision {
        let actions: Vec<Action> = statements.iter().map(|s| Action::Sql(s.clone())).collect();
        self.ctx.gate.decide(&actions)
    }

    fn decide_statements(
        &mut self,
        text: &str,
        statements: &[Arc<SqlStatement>],
        batch: &mut Batch,
    ) -> Plan {
        let decision = self.evaluate(statements);
        let veto = match &self.ctx.masks {
            Some(_) => veto(statements),
            None => None,
        };
        self.record(text, statements, decision, veto, batch)
    }

    /// Stage the command at the gate (its event joins the batch) and plan its forwarding,
    /// hold or refusal. A veto refuses what policy would let through.
    fn record(
        &mut self,
        text: &str,
        statements: &[Arc<SqlStatement>],
        mut decision: Decision,
        veto: Option<Veto>,
        batch: &mut Batch,
    ) -> Plan {
        let worst = SqlStatement::worst_kind(statements);
        let tables = SqlStatement::tables_of(statements);
        let bind = self.bind_for_hold.take();
        let veto = veto.filter(|_| !matches!(decision.verdict, Verdict::Deny));
        if let Some(v) = &veto {
            decision = Decision {
                verdict: Verdict::Deny,
                policies: Vec::new(),
                reason: Some(v.message.to_string()),
                policy_version: decision.policy_version,
            };
        }
        let mut cmd = Command {
            // Decided already.
            actions: Vec::new(),
            action: worst.cedar_id().to_string(),
            text: text.to_string(),
            tables,
            parameters: Vec::new(),
            fingerprint: None,
            detail: None,
            waiting: Waiting::Hold,
        };
        if matches!(decision.verdict, Verdict::Review { .. }) {
            // What approvers see, and what the approval is bound to: the text and the
            // values bound to it.
            let bound = bind
                .as_ref()
                .and_then(|raw| raw.get(5..))
                .and_then(|body| codec::parse_bind(body).ok());
            if let Some(b) = &bound {
                cmd.fingerprint = Some(gateway_core::approvals::fingerprint(text, &b.params));
                cmd.parameters = shown_parameters(b, self.ctx.masks.as_deref(), text);
            }
        }
        let count = statements.len();
        match self.ctx.gate.stage(cmd, &decision, batch) {
            Staged::Forward(pending) => Plan::Command {
                ticket: Ticket::Staged(pending),
                statements: count,
            },
            Staged::Review(review) => Plan::Hold {
                review,
                statements: count,
            },
            Staged::Refuse(r) => match veto {
                Some(v) => refuse(v.code, v.message, v.detail),
                None => {
                    let detail = format!(
                        "{} refused on connection \"{}\" by policy [{}]",
                        r.action,
                        self.ctx.conn.name,
                        r.policies.join(", ")
                    );
                    refuse("42501", &format!("portcullis: {}", r.reason), &detail)
                }
            },
        }
    }
}

/// Catalog relations holding samples of column values (bare names; qualified names add them
/// too).
const STATISTICS: &[&str] = &[
    "pg_stats",
    "pg_stats_ext",
    "pg_stats_ext_exprs",
    "pg_statistic",
    "pg_statistic_ext",
    "pg_statistic_ext_data",
];

/// What a masked session refuses whatever policy says: the planner's statistics (they hold
/// column values outside any column's lineage). Binary COPY out is masked, or refused as it
/// starts when its columns can't be read (see `relay::results`).
fn veto(statements: &[Arc<SqlStatement>]) -> Option<Veto> {
    if statements
        .iter()
        .flat_map(|s| s.tables.iter())
        .any(|t| STATISTICS.contains(&t.as_str()))
    {
        return Some(Veto {
            code: "42501",
            message: "portcullis: the planner's statistics are not readable on this connection because its results are masked: they hold column values",
            detail: "pg_stats and pg_statistic* show values of any column",
        });
    }
    None
}

mod batch;
mod extra;
mod hold;

use batch::{forward, refuse};
use extra::Extra;
