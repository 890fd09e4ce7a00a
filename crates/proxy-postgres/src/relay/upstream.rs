//! Client → target: frame what the client sent, classify and decide each command, make its
//! audit event durable, then forward the whole batch in one write.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use gateway_core::Side;
use gateway_core::action::{Action, SqlKind, SqlStatement};
use gateway_core::audit::{AuditEvent, EventKind};
use gateway_core::policy::{ConnectionRef, Decision, Verdict};
use gateway_core::sql::LexOptions;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::READ_CHUNK;
use super::state::{InFlight, MAX_NAMES, Name, PendingOp, Prepared, Shared, Substitute, name_key};
use crate::codec::{self, Frame, tags::frontend as fe};
use crate::error::{PgError, Result};
use crate::session::SessionCtx;

/// What to do with one client frame.
enum Plan {
    /// Forward as is; carries no command (Bind, Describe, Sync, CopyData...).
    Raw,
    /// Forward; a command with `statements` completions expected.
    Command { command: u64, statements: usize },
    /// Forward; an empty query (one EmptyQueryResponse, nothing to audit).
    Empty,
    /// Refused: send the substitute instead and swap its error for `error`. A refused
    /// Parse keeps the client's statement name, so the target's unnamed statement is
    /// replaced as it would have been.
    Refuse {
        error: Bytes,
        parse_name: Option<String>,
    },
}

/// Per-session state of the client → target direction.
struct Upstream<'a> {
    ctx: &'a SessionCtx,
    /// What the target will hold once everything sent so far has run: decisions for
    /// pipelined commands are made against it.
    statements: HashMap<Name, Arc<Prepared>>,
    portals: HashMap<Name, Arc<Prepared>>,
    /// Commands numbered within the session, linking `command` and `command_end` events.
    next_command: u64,
    /// A command of the current extended-protocol batch was refused: like PostgreSQL after
    /// an error, drop everything up to the next Sync.
    skip_until_sync: bool,
    /// Operations to register as pending when the batch is forwarded.
    ops: Vec<PendingOp>,
    /// The target's `standard_conforming_strings` and whether its client encoding is unsafe
    /// to lex (see [`Shared`]).
    standard_conforming_strings: bool,
    unsafe_encoding: bool,
}

pub(super) async fn run<R, W>(
    ctx: &SessionCtx,
    shared: &Mutex<Shared>,
    client: &mut R,
    mut buf: BytesMut,
    target: &mut W,
) -> Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut up = Upstream {
        ctx,
        statements: HashMap::new(),
        portals: HashMap::new(),
        next_command: 1,
        skip_until_sync: false,
        ops: Vec::new(),
        standard_conforming_strings: true,
        unsafe_encoding: false,
    };
    let mut out = BytesMut::with_capacity(READ_CHUNK);
    let mut events: Vec<AuditEvent> = Vec::new();
    let mut pending: Vec<(Frame, Plan, Option<PendingOp>)> = Vec::new();
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
            let plan = up.decide(shared, &frame, &mut events)?;
            match (&plan, frame.tag) {
                (_, fe::SYNC) => up.skip_until_sync = false,
                (Plan::Refuse { .. }, fe::PARSE | fe::EXECUTE) => up.skip_until_sync = true,
                _ => {}
            }
            let op = up.ops.pop();
            pending.push((frame, plan, op));
        }
        if !pending.is_empty() {
            // Audit first: nothing is forwarded until its event is chained and staged for
            // the journal, and its results reach the client only once it is written
            // (downstream waits for `audit_seq`).
            let mut staged = None;
            if !events.is_empty() {
                let started = Instant::now();
                match ctx.services.audit.stage(std::mem::take(&mut events)) {
                    Ok(seq) => staged = Some(seq),
                    Err(e) => {
                        ctx.services
                            .metrics
                            .audit_failures_total
                            .fetch_add(1, Relaxed);
                        return Err(PgError::Gateway(format!(
                            "audit is unavailable, so no command can run: {e}"
                        )));
                    }
                }
                ctx.services
                    .metrics
                    .decision_latency
                    .observe(started.elapsed());
            }
            {
                let mut sh = shared.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(seq) = staged {
                    sh.audit_seq = seq;
                }
                for (frame, plan, op) in pending.drain(..) {
                    forward(&mut sh, frame, plan, op, &mut out);
                }
            }
            target.write_all(&out).await.map_err(PgError::target_io)?;
            out.clear();
        }
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
    fn decide(
        &mut self,
        shared: &Mutex<Shared>,
        frame: &Frame,
        events: &mut Vec<AuditEvent>,
    ) -> Result<Plan> {
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
                },
            )
        };
        match frame.tag {
            fe::QUERY => {
                let text = codec::parse_query(frame.body()).map_err(bad)?;
                let statements = classify(text);
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
                Ok(self.decide_statements(text, &statements, events))
            }
            fe::PARSE => {
                let p = codec::parse_parse(frame.body()).map_err(bad)?;
                let statements = classify(p.query);
                let key = name_key(p.name);
                if !statements.is_empty() {
                    // Only what policy allows now may be prepared on the target; each
                    // Execute is decided again.
                    let decision = self.evaluate(&statements);
                    if !decision.is_allowed() {
                        let plan = self.record(p.query, &statements, &decision, events);
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
                let prepared = Arc::new(Prepared {
                    text: Arc::from(p.query),
                    statements: statements.clone(),
                });
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
                Ok(
                    match self.decide_statements(&p.text, &p.statements, events) {
                        // One Execute, one completion, whatever the statement count.
                        Plan::Command { command, .. } => Plan::Command {
                            command,
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
                Ok(self.decide_statements(&p.text, &p.statements, events))
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
        if gateway_core::util::now_secs() > self.ctx.identity.expires_at {
            return Decision {
                verdict: Verdict::Deny,
                policies: Vec::new(),
                reason: Some(
                    "the session's token has expired; reconnect with a fresh token".into(),
                ),
                policy_version: 0,
            };
        }
        let actions: Vec<Action> = statements.iter().map(|s| Action::Sql(s.clone())).collect();
        let conn = ConnectionRef {
            name: &self.ctx.conn.name,
            protocol: self.ctx.conn.protocol,
        };
        self.ctx
            .services
            .policy
            .current()
            .decide_all(&self.ctx.identity, &conn, &actions)
    }

    fn decide_statements(
        &mut self,
        text: &str,
        statements: &[Arc<SqlStatement>],
        events: &mut Vec<AuditEvent>,
    ) -> Plan {
        let decision = self.evaluate(statements);
        self.record(text, statements, &decision, events)
    }

    /// Queue the command's audit event and plan its forwarding or refusal.
    fn record(
        &mut self,
        text: &str,
        statements: &[Arc<SqlStatement>],
        decision: &Decision,
        events: &mut Vec<AuditEvent>,
    ) -> Plan {
        let command = self.next_command;
        self.next_command += 1;
        let worst = statements
            .iter()
            .map(|s| s.kind)
            .max()
            .unwrap_or(SqlKind::Unknown);
        let mut ev = AuditEvent::new(EventKind::Command, &self.ctx.session_id);
        ev.command = Some(command);
        ev.statement = Some(text.to_string());
        ev.action = Some(worst.cedar_id().to_string());
        let mut tables: Vec<String> = statements
            .iter()
            .flat_map(|s| s.tables.iter().cloned())
            .collect();
        tables.sort();
        tables.dedup();
        ev.tables = tables;
        ev.verdict = Some(decision.audit_verdict());
        ev.policies = decision.policies.clone();
        ev.reason = decision.reason.clone();
        events.push(ev);

        let metrics = &self.ctx.services.metrics;
        let counter = match decision.verdict {
            Verdict::Allow(_) => &metrics.statements_allowed,
            Verdict::Deny => &metrics.statements_denied,
            Verdict::Review { .. } => &metrics.statements_review,
        };
        counter.fetch_add(1, Relaxed);

        if decision.is_allowed() {
            return Plan::Command {
                command,
                statements: statements.len(),
            };
        }
        let reason = decision.reason.as_deref().unwrap_or("denied by policy");
        let message = if matches!(decision.verdict, Verdict::Review { .. }) {
            format!("portcullis: approval required: {reason}")
        } else {
            format!("portcullis: {reason}")
        };
        let detail = format!(
            "{} refused on connection \"{}\" by policy [{}]",
            worst.cedar_id(),
            self.ctx.conn.name,
            decision.policies.join(", ")
        );
        let mut err = BytesMut::with_capacity(128 + message.len() + detail.len());
        codec::put_error(&mut err, "ERROR", "42501", &message, Some(&detail), None);
        Plan::Refuse {
            error: err.freeze(),
            parse_name: None,
        }
    }
}

/// Append the frame (or its refusal substitute) to the target-bound batch.
fn forward(sh: &mut Shared, frame: Frame, plan: Plan, op: Option<PendingOp>, out: &mut BytesMut) {
    let batch = sh.batches_sent;
    let now = Instant::now();
    match plan {
        Plan::Raw => out.extend_from_slice(&frame.raw),
        Plan::Command {
            command,
            statements,
        } => {
            for _ in 0..statements {
                sh.inflight.push_back(InFlight {
                    batch,
                    command,
                    started: now,
                });
            }
            out.extend_from_slice(&frame.raw);
        }
        Plan::Empty => {
            sh.inflight.push_back(InFlight {
                batch,
                command: 0,
                started: now,
            });
            out.extend_from_slice(&frame.raw);
        }
        Plan::Refuse { error, parse_name } => {
            sh.substitutes.push_back(Substitute { batch, error });
            if matches!(frame.tag, fe::QUERY | fe::FUNCTION_CALL) {
                // Both end their own batch: a Query answers with an error and ReadyForQuery.
                codec::put_query(out, &sh.marker);
            } else {
                // Inside an extended-protocol batch: a Parse that fails puts the target in
                // the error state until Sync, as the refused message would have. A refused
                // Parse keeps the client's name (replacing the unnamed statement as it
                // would); a refused Execute uses a name of the gateway's own.
                let name = parse_name.unwrap_or_else(|| format!("{}_x", sh.marker));
                let parse = codec::Parse {
                    name: &name,
                    query: &sh.marker,
                    param_types: Vec::new(),
                };
                // A name from a decoded Parse and a short query fit the encoder's limits.
                let _ = codec::put_parse(out, &parse);
            }
        }
    }
    if let Some(op) = op {
        sh.pending.push_back((batch, op));
    }
    if matches!(frame.tag, fe::QUERY | fe::SYNC | fe::FUNCTION_CALL) {
        sh.batches_sent += 1;
    }
}
