//! The relay of an open session. Two halves run concurrently in the session's task:
//!
//! - **upstream** (client → target) frames what the client sent, classifies each command,
//!   asks policy, records the audit event (durable before anything is forwarded), and writes
//!   the whole batch to the target in one write;
//! - **downstream** (target → client) relays results in batches, substitutes the gateway's
//!   error for a refused command, and records each command's completion.
//!
//! A refused command never reaches the target. In its place the target is sent a statement
//! that fails to parse (`PORTCULLIS_DENIED`): the target then answers with an error exactly
//! where the refused command's answer belongs — in order with pipelined commands, aborting an
//! open transaction and skipping to Sync as PostgreSQL does for any error — and downstream
//! replaces that error with the policy's reason.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use gateway_core::Side;
use gateway_core::action::{Action, SqlKind, SqlStatement};
use gateway_core::audit::{AuditEvent, EventKind};
use gateway_core::policy::{ConnectionRef, Decision, Verdict};
use gateway_core::sql::LexOptions;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::codec::{self, Frame, tags::backend as be, tags::frontend as fe};
use crate::error::{PgError, Result};
use crate::session::SessionCtx;

/// The statement sent to the target in place of a refused one: it cannot parse.
const DENIED_SQL: &str = "PORTCULLIS_DENIED";
const DENIED_STATEMENT_NAME: &str = "portcullis_denied";
/// Read buffer size per direction.
const READ_CHUNK: usize = 64 * 1024;

/// A prepared statement as the client parsed it.
struct Prepared {
    text: Arc<str>,
    statements: Arc<[Arc<SqlStatement>]>,
}

/// A command forwarded to the target whose completion has not been seen yet.
struct InFlight {
    /// Index of the sync point (Query, Sync or FunctionCall) that ends its batch.
    batch: u64,
    command: u64,
    started: Instant,
}

/// A refused command's error, waiting for the target's answer to the substitute.
struct Substitute {
    batch: u64,
    error: Bytes,
}

/// State both halves see. Held only for short, non-awaiting sections.
#[derive(Default)]
struct Shared {
    inflight: VecDeque<InFlight>,
    substitutes: VecDeque<Substitute>,
    /// Sync points sent to the target so far.
    batches_sent: u64,
    /// ReadyForQuery messages seen from the target so far.
    batches_done: u64,
    /// The target's `standard_conforming_strings`, which changes how SQL is lexed.
    standard_conforming_strings: bool,
    /// The session's client encoding lets a multi-byte character end in a quote or
    /// backslash byte (SJIS, BIG5, GBK...): no lexer that reads UTF-8 can split such text
    /// the way the server does, so every statement is unknown.
    unsafe_encoding: bool,
}

/// Client-only encodings whose multi-byte characters may contain ASCII quote bytes.
const UNSAFE_CLIENT_ENCODINGS: &[&str] = &[
    "SJIS",
    "SHIFT_JIS_2004",
    "BIG5",
    "GBK",
    "UHC",
    "GB18030",
    "JOHAB",
];

impl Shared {
    /// Follow a ParameterStatus the target reported.
    fn track_parameter(&mut self, name: &str, value: &str) {
        match name {
            "standard_conforming_strings" => self.standard_conforming_strings = value == "on",
            "client_encoding" => {
                self.unsafe_encoding = UNSAFE_CLIENT_ENCODINGS
                    .iter()
                    .any(|e| e.eq_ignore_ascii_case(value))
            }
            _ => {}
        }
    }
}

/// Relay until either side closes. Returns the error that ended the session, if any.
pub(crate) async fn run<C, T>(
    ctx: &SessionCtx,
    client: C,
    client_buf: BytesMut,
    target: T,
    target_buf: BytesMut,
    target_params: &[(String, String)],
) -> Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut initial = Shared {
        standard_conforming_strings: true,
        ..Shared::default()
    };
    for (k, v) in target_params {
        initial.track_parameter(k, v);
    }
    let shared = Mutex::new(initial);
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (mut target_rd, mut target_wr) = tokio::io::split(target);
    let outcome = {
        let up = upstream(ctx, &shared, &mut client_rd, client_buf, &mut target_wr);
        let down = downstream(ctx, &shared, &mut target_rd, target_buf, &mut client_wr);
        tokio::pin!(up, down);
        tokio::select! {
            r = &mut up => r,
            r = &mut down => r,
        }
    };
    if let Err(e) = &outcome {
        // Tell the client why its session ended, in its own protocol.
        if e.side() != Side::Client {
            let mut out = BytesMut::new();
            codec::put_error(
                &mut out,
                "FATAL",
                e.sqlstate(),
                &format!("portcullis: {e}"),
                None,
                None,
            );
            let _ = client_wr.write_all(&out).await;
        }
    }
    let _ = client_wr.shutdown().await;
    let _ = target_wr.shutdown().await;
    outcome
}

/// Per-session state of the client → target direction.
struct Upstream<'a> {
    ctx: &'a SessionCtx,
    prepared: HashMap<String, Arc<Prepared>>,
    portals: HashMap<String, Arc<Prepared>>,
    /// Commands numbered within the session, linking `command` and `command_end` events.
    next_command: u64,
    /// A command of the current extended-protocol batch was refused: like PostgreSQL after
    /// an error, drop everything up to the next Sync.
    skip_until_sync: bool,
}

async fn upstream<R, W>(
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
        prepared: HashMap::new(),
        portals: HashMap::new(),
        next_command: 1,
        skip_until_sync: false,
    };
    let mut out = BytesMut::with_capacity(READ_CHUNK);
    let mut events: Vec<AuditEvent> = Vec::new();
    let max = ctx.max_message;
    loop {
        let mut terminate = false;
        let mut pending: Vec<(Frame, Option<Decided>)> = Vec::new();
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
            let decided = up.decide(shared, &frame, &mut events)?;
            if frame.tag == fe::SYNC {
                up.skip_until_sync = false;
            } else if decided.as_ref().is_some_and(|d| !d.allowed)
                && matches!(frame.tag, fe::PARSE | fe::EXECUTE)
            {
                up.skip_until_sync = true;
            }
            pending.push((frame, decided));
        }
        if !pending.is_empty() {
            // Audit first: nothing is forwarded until its event is durable.
            if !events.is_empty() {
                let started = Instant::now();
                if let Err(e) = ctx
                    .services
                    .audit
                    .record_all(std::mem::take(&mut events))
                    .await
                {
                    ctx.services
                        .metrics
                        .audit_failures_total
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Err(PgError::Gateway(format!(
                        "audit is unavailable, so no command can run: {e}"
                    )));
                }
                ctx.services
                    .metrics
                    .decision_latency
                    .observe(started.elapsed());
            }
            {
                let mut sh = shared.lock().unwrap_or_else(|e| e.into_inner());
                for (frame, decided) in pending.drain(..) {
                    up.forward(&mut sh, frame, decided, &mut out);
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
            return Ok(());
        }
    }
}

/// What upstream decided about one frame that carries a command.
struct Decided {
    allowed: bool,
    command: u64,
    /// Statements of a simple query (one in-flight entry each).
    statements: usize,
    /// The client's error for a refused command.
    error: Option<Bytes>,
}

impl Upstream<'_> {
    /// Classify and decide one frame, queueing its audit event. `None` for frames that carry
    /// no command (Bind, Describe, Sync, CopyData...).
    fn decide(
        &mut self,
        shared: &Mutex<Shared>,
        frame: &Frame,
        events: &mut Vec<AuditEvent>,
    ) -> Result<Option<Decided>> {
        let bad = |err| PgError::Codec {
            side: Side::Client,
            err,
        };
        let (scs, unsafe_encoding) = {
            let sh = shared.lock().unwrap_or_else(|e| e.into_inner());
            (sh.standard_conforming_strings, sh.unsafe_encoding)
        };
        let classifier = &self.ctx.services.classifier;
        let classify = |text: &str| -> Arc<[Arc<SqlStatement>]> {
            if unsafe_encoding {
                return Arc::from(vec![Arc::new(unknown_statement())]);
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
                if statements.is_empty() {
                    return Ok(None); // empty query: the target answers EmptyQueryResponse
                }
                self.forget_on_session_reset(&statements);
                let d = self.decide_statements(text, &statements, events);
                Ok(Some(d))
            }
            fe::PARSE => {
                let p = codec::parse_parse(frame.body()).map_err(bad)?;
                let statements = classify(p.query);
                let prepared = Arc::new(Prepared {
                    text: Arc::from(p.query),
                    statements: statements.clone(),
                });
                // Refuse at Parse what policy would refuse at every Execute, so the client
                // learns early; allowed statements are decided again at each Execute.
                let decision = self.evaluate(&statements);
                if matches!(decision.verdict, Verdict::Deny) {
                    let d = self.record(p.query, &statements, &decision, events);
                    self.prepared.remove(p.name);
                    return Ok(Some(d));
                }
                self.prepared.insert(p.name.to_string(), prepared);
                Ok(None)
            }
            fe::BIND => {
                let b = codec::parse_bind(frame.body()).map_err(bad)?;
                match self.prepared.get(b.statement) {
                    Some(p) => {
                        self.portals.insert(b.portal.to_string(), p.clone());
                    }
                    None => {
                        self.portals.remove(b.portal);
                    }
                }
                Ok(None)
            }
            fe::EXECUTE => {
                let (portal, _) = codec::parse_execute(frame.body()).map_err(bad)?;
                let p = match self.portals.get(portal) {
                    Some(p) => p.clone(),
                    // A portal not bound through this session (or its statement unknown
                    // here): nothing to classify, so it is unknown, never a read.
                    None => Arc::new(Prepared {
                        text: Arc::from(format!("<execute of unknown portal \"{portal}\">")),
                        statements: Arc::from(vec![Arc::new(unknown_statement())]),
                    }),
                };
                let mut d = self.decide_statements(&p.text, &p.statements, events);
                d.statements = 1; // one Execute, one completion
                Ok(Some(d))
            }
            fe::CLOSE => {
                let (kind, name) = codec::parse_close(frame.body()).map_err(bad)?;
                if kind == b'S' {
                    self.prepared.remove(name);
                } else {
                    self.portals.remove(name);
                }
                Ok(None)
            }
            fe::FUNCTION_CALL => {
                // The fast-path interface runs server functions by OID (lo_import and
                // friends use it): nothing to classify, so it is unknown.
                let statements: Arc<[Arc<SqlStatement>]> =
                    Arc::from(vec![Arc::new(unknown_statement())]);
                let d = self.decide_statements("<fast-path function call>", &statements, events);
                Ok(Some(d))
            }
            fe::DESCRIBE | fe::SYNC | fe::FLUSH | fe::COPY_DATA | fe::COPY_DONE | fe::COPY_FAIL => {
                Ok(None)
            }
            other => Err(PgError::Client(format!(
                "unexpected message type `{}` from client",
                char::from(other)
            ))),
        }
    }

    /// `DEALLOCATE` and `DISCARD` through SQL drop server-side statements behind the
    /// protocol's back: forget what this session knows so a stale name can't be trusted.
    fn forget_on_session_reset(&mut self, statements: &[Arc<SqlStatement>]) {
        if statements
            .iter()
            .any(|s| s.shape.starts_with("deallocate") || s.shape.starts_with("discard"))
        {
            self.prepared.clear();
            self.portals.clear();
        }
    }

    fn evaluate(&self, statements: &[Arc<SqlStatement>]) -> Decision {
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
    ) -> Decided {
        let decision = if gateway_core::util::now_secs() > self.ctx.identity.expires_at {
            Decision {
                verdict: Verdict::Deny,
                policies: Vec::new(),
                reason: Some(
                    "the session's token has expired; reconnect with a fresh token".into(),
                ),
                policy_version: 0,
            }
        } else {
            self.evaluate(statements)
        };
        self.record(text, statements, &decision, events)
    }

    /// Queue the command's audit event and build what upstream needs to forward or refuse it.
    fn record(
        &mut self,
        text: &str,
        statements: &[Arc<SqlStatement>],
        decision: &Decision,
        events: &mut Vec<AuditEvent>,
    ) -> Decided {
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
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);

        match &decision.verdict {
            Verdict::Allow(_) => Decided {
                allowed: true,
                command,
                statements: statements.len(),
                error: None,
            },
            Verdict::Deny | Verdict::Review { .. } => {
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
                Decided {
                    allowed: false,
                    command,
                    statements: 1,
                    error: Some(err.freeze()),
                }
            }
        }
    }

    /// Append the frame (or its refusal substitute) to the target-bound batch.
    fn forward(
        &mut self,
        sh: &mut Shared,
        frame: Frame,
        decided: Option<Decided>,
        out: &mut BytesMut,
    ) {
        let batch = sh.batches_sent;
        match decided {
            None => out.extend_from_slice(&frame.raw),
            Some(d) if d.allowed => {
                let now = Instant::now();
                for _ in 0..d.statements {
                    sh.inflight.push_back(InFlight {
                        batch,
                        command: d.command,
                        started: now,
                    });
                }
                out.extend_from_slice(&frame.raw);
            }
            Some(d) => {
                if let Some(error) = d.error {
                    sh.substitutes.push_back(Substitute { batch, error });
                }
                if frame.tag == fe::QUERY || frame.tag == fe::FUNCTION_CALL {
                    codec::put_query(out, DENIED_SQL);
                } else {
                    let parse = codec::Parse {
                        name: DENIED_STATEMENT_NAME,
                        query: DENIED_SQL,
                        param_types: Vec::new(),
                    };
                    // A name and a query this short cannot exceed the encoder's limits.
                    let _ = codec::put_parse(out, &parse);
                }
            }
        }
        if matches!(frame.tag, fe::QUERY | fe::SYNC | fe::FUNCTION_CALL) {
            sh.batches_sent += 1;
        }
    }
}

fn unknown_statement() -> SqlStatement {
    SqlStatement {
        kind: SqlKind::Unknown,
        tables: Vec::new(),
        unbounded: false,
        shape: String::new(),
        parsed: false,
    }
}

/// Whether an ErrorResponse from the target is its answer to the refusal substitute.
fn is_substitute_error(body: &[u8]) -> bool {
    codec::parse_error_fields(body)
        .map(|f| f.code == "42601" && f.message.contains(DENIED_SQL))
        .unwrap_or(false)
}

async fn downstream<R, W>(
    ctx: &SessionCtx,
    shared: &Mutex<Shared>,
    target: &mut R,
    mut buf: BytesMut,
    client: &mut W,
) -> Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut out = BytesMut::with_capacity(READ_CHUNK);
    let mut ends: Vec<AuditEvent> = Vec::new();
    let max = ctx.max_message;
    loop {
        {
            let mut sh = shared.lock().unwrap_or_else(|e| e.into_inner());
            while let Some(frame) =
                codec::next_frame(&mut buf, max).map_err(|err| PgError::Codec {
                    side: Side::Target,
                    err,
                })?
            {
                match frame.tag {
                    be::ERROR if is_substitute_error(frame.body()) => {
                        match sh.substitutes.pop_front() {
                            Some(sub) => out.extend_from_slice(&sub.error),
                            None => out.extend_from_slice(&frame.raw),
                        }
                        continue;
                    }
                    be::ERROR => {
                        let msg = codec::parse_error_fields(frame.body())
                            .map(|f| format!("{}: {}", f.code, f.message))
                            .unwrap_or_else(|_| "error".into());
                        complete(ctx, &mut sh, &mut ends, None, Some(msg));
                    }
                    be::COMMAND_COMPLETE => {
                        let rows = codec::parse_command_complete(frame.body())
                            .ok()
                            .and_then(codec::rows_from_tag);
                        complete(ctx, &mut sh, &mut ends, rows, None);
                    }
                    be::EMPTY_QUERY | be::PORTAL_SUSPENDED | be::FUNCTION_CALL_RESPONSE => {
                        complete(ctx, &mut sh, &mut ends, None, None);
                    }
                    be::READY => {
                        let done = sh.batches_done;
                        sh.batches_done += 1;
                        // Commands of this batch that never completed were skipped after an
                        // error; refusals whose substitute was skipped likewise.
                        while sh.inflight.front().is_some_and(|f| f.batch <= done) {
                            complete(ctx, &mut sh, &mut ends, None, Some("not executed".into()));
                        }
                        while sh.substitutes.front().is_some_and(|s| s.batch <= done) {
                            sh.substitutes.pop_front();
                        }
                    }
                    be::PARAMETER_STATUS => {
                        if let Ok((k, v)) = codec::parse_parameter_status(frame.body()) {
                            sh.track_parameter(k, v);
                        }
                    }
                    _ => {}
                }
                out.extend_from_slice(&frame.raw);
            }
        }
        if !out.is_empty() {
            client.write_all(&out).await.map_err(PgError::client_io)?;
            out.clear();
        }
        for ev in ends.drain(..) {
            if ctx.services.audit.record_later(ev).await.is_err() {
                ctx.services
                    .metrics
                    .audit_failures_total
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_CHUNK);
        }
        let n = target
            .read_buf(&mut buf)
            .await
            .map_err(PgError::target_io)?;
        if n == 0 {
            return Err(PgError::Target("the target closed the connection".into()));
        }
    }
}

/// Record the completion of the oldest in-flight command.
fn complete(
    ctx: &SessionCtx,
    sh: &mut Shared,
    ends: &mut Vec<AuditEvent>,
    rows: Option<u64>,
    error: Option<String>,
) {
    let Some(f) = sh.inflight.pop_front() else {
        return;
    };
    let elapsed = f.started.elapsed();
    ctx.services.metrics.statement_latency.observe(elapsed);
    let mut ev = AuditEvent::new(EventKind::CommandEnd, &ctx.session_id);
    ev.command = Some(f.command);
    ev.duration_us = Some(elapsed.as_micros() as u64);
    ev.rows = rows;
    ev.error = error;
    ends.push(ev);
}
