//! Client → target: frame what the client sent, classify and decide each command, make its
//! audit event durable, then forward the whole batch in one write.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use gateway_core::Side;
use gateway_core::action::{Action, SqlKind, SqlStatement};
use gateway_core::approvals::{NewKind, NewRequest, Outcome};
use gateway_core::audit::{AuditEvent, EventKind};
use gateway_core::identity::{AuthMethod, IdentityError};
use gateway_core::masking::SessionMasks;
use gateway_core::policy::{ConnectionRef, Decision, Verdict};
use gateway_core::sql::LexOptions;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedSender;

use super::READ_CHUNK;
use super::review::shown_parameters;
use super::state::{
    InFlight, MAX_NAMES, Name, PendingOp, Prepared, ResultSource, Shared, Substitute, name_key,
};
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
    /// Policy sends it to review and no granted window covers it: hold it in the session
    /// until people decide.
    Hold(Box<Held>),
}

/// A command waiting for approval, with what it becomes either way.
struct Held {
    command: u64,
    statements: usize,
    text: String,
    action: &'static str,
    decision: Decision,
    /// Its audit event, recorded once the outcome is known (with the approval id).
    event: AuditEvent,
    fingerprint: String,
    /// Bound parameters as approvers see them.
    parameters: Vec<Option<String>>,
    tables: Vec<String>,
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
    /// The last Bind seen (portal name and the whole message): a held Execute's parameters
    /// are part of what is approved.
    last_bind: Option<(Name, Bytes)>,
    /// The Bind of the Execute being decided, if it was the last one seen.
    bind_for_hold: Option<Bytes>,
    /// Result formats each portal was bound with (kept only while masking applies).
    portal_formats: HashMap<Name, Arc<[i16]>>,
    /// The statements of the simple Query just decided, for masking to reuse.
    query_statements: Option<Arc<[Arc<SqlStatement>]>>,
    /// When the session's access key was last found still valid.
    credential_checked: Cell<Option<Instant>>,
    /// The access key was found revoked: every further command is refused.
    revoked: Cell<bool>,
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

/// How often a session on an access key re-checks it: a revocation takes effect within this.
const RECHECK_EVERY: Duration = Duration::from_millis(500);

/// What masking needs from a forwarded frame.
enum Extra {
    None,
    /// A command with results: what they come from.
    Source(Arc<ResultSource>),
    /// A Describe: whose result columns its answer reports.
    Describe(Arc<Prepared>),
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
        next_command: 1,
        skip_until_sync: false,
        ops: Vec::new(),
        standard_conforming_strings: true,
        unsafe_encoding: false,
        last_bind: None,
        bind_for_hold: None,
        portal_formats: HashMap::new(),
        query_statements: None,
        credential_checked: Cell::new(None),
        revoked: Cell::new(false),
    };
    let mut out = BytesMut::with_capacity(READ_CHUNK);
    let mut events: Vec<AuditEvent> = Vec::new();
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
            let mut plan = up.decide(shared, &frame, &mut events)?;
            if let Plan::Hold(held) = plan {
                // What came before goes out first, so its results reach the client while
                // this one waits.
                send(ctx, shared, &mut events, &mut pending, &mut out, target).await?;
                plan = up
                    .hold(*held, client, &mut buf, &notices, &mut events)
                    .await?;
            }
            let extra = match &ctx.masks {
                Some(masks) => up.mask_extra(masks, &frame, &mut plan, &mut events),
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
        send(ctx, shared, &mut events, &mut pending, &mut out, target).await?;
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

/// Stage the audit events of the pending frames, write them to the journal (synced in fsync
/// mode), then forward the frames in one write. No byte of a command reaches the target
/// before its event is written, so a crash at any instant cannot leave an executed command
/// without its event. Group commit still applies: one journal write carries whatever every
/// session has staged.
async fn send<W: AsyncWrite + Unpin>(
    ctx: &SessionCtx,
    shared: &Mutex<Shared>,
    events: &mut Vec<AuditEvent>,
    pending: &mut Vec<(Frame, Plan, Option<PendingOp>, Extra)>,
    out: &mut BytesMut,
    target: &mut W,
) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let mut staged = None;
    if !events.is_empty() {
        let started = Instant::now();
        let audit = &ctx.services.audit;
        match audit
            .stage(std::mem::take(events))
            .and_then(|seq| audit.flush(seq).map(|()| seq))
        {
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
        for (frame, plan, op, extra) in pending.drain(..) {
            forward(&mut sh, frame, plan, op, extra, out);
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
                Ok(self.decide_statements(text, &statements, events))
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

    /// What masking needs from a frame about to be forwarded; also refuses binary COPY out,
    /// which can't be masked, before it reaches the target.
    fn mask_extra(
        &mut self,
        masks: &SessionMasks,
        frame: &Frame,
        plan: &mut Plan,
        events: &mut [AuditEvent],
    ) -> Extra {
        let (text, exec) = match frame.tag {
            fe::BIND => {
                if let Ok(b) = codec::parse_bind(frame.body()) {
                    let formats: Arc<[i16]> = Arc::from(b.result_formats);
                    if self.portal_formats.len() >= MAX_NAMES {
                        self.portal_formats.clear();
                    }
                    self.portal_formats.insert(name_key(b.portal), formats);
                }
                return Extra::None;
            }
            fe::CLOSE => {
                if let Ok((b'P', name)) = codec::parse_close(frame.body()) {
                    self.portal_formats.remove(&name_key(name));
                }
                return Extra::None;
            }
            fe::DESCRIBE => {
                let Ok((kind, name)) = codec::parse_describe(frame.body()) else {
                    return Extra::None;
                };
                let map = if kind == b'S' {
                    &self.statements
                } else {
                    &self.portals
                };
                // Every Describe is answered once; an unknown name still takes its place.
                let p = map
                    .get(&name_key(name))
                    .cloned()
                    .unwrap_or_else(|| Prepared::unknown(String::new()));
                return Extra::Describe(p);
            }
            _ if !matches!(plan, Plan::Command { .. }) => return Extra::None,
            fe::QUERY => match codec::parse_query(frame.body()) {
                Ok(t) => (Arc::<str>::from(t), None),
                Err(_) => return Extra::None,
            },
            fe::EXECUTE => {
                let Ok((portal, _)) = codec::parse_execute(frame.body()) else {
                    return Extra::None;
                };
                let key = name_key(portal);
                let p = self
                    .portals
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| Prepared::unknown(String::new()));
                let formats = self
                    .portal_formats
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| Arc::from(Vec::new()));
                (p.text.clone(), Some((p, formats)))
            }
            _ => return Extra::None,
        };
        // The planner's statistics hold column values (most common values, histogram
        // bounds) outside any column's lineage: not readable on a masked session.
        let statements = match (&exec, self.query_statements.take()) {
            (Some((p, _)), _) => p.statements.clone(),
            (None, Some(decided)) => decided,
            (None, None) => self.ctx.services.classifier.classify(
                &text,
                LexOptions {
                    standard_conforming_strings: self.standard_conforming_strings,
                },
            ),
        };
        if statements
            .iter()
            .flat_map(|s| s.tables.iter())
            .any(|t| STATISTICS.contains(&t.as_str()))
        {
            let message = "portcullis: the planner's statistics are not readable on this connection because its results are masked: they hold column values";
            if let Some(ev) = events.last_mut() {
                ev.verdict = Some(gateway_core::audit::Verdict::Deny);
                ev.reason = Some(message.into());
            }
            *plan = refuse(
                "42501",
                message,
                "pg_stats and pg_statistic* show values of any column",
            );
            return Extra::None;
        }
        let copy = text
            .as_bytes()
            .windows(4)
            .any(|w| w.eq_ignore_ascii_case(b"copy"));
        if copy
            && let Some(c) = crate::mask::copy::parse_copy(&text)
            && c.format == crate::mask::copy::CopyFormat::Binary
        {
            let message = "portcullis: binary COPY is refused on this connection because its results are masked; use text or CSV format";
            if let Some(ev) = events.last_mut() {
                ev.verdict = Some(gateway_core::audit::Verdict::Deny);
                ev.reason = Some(message.into());
            }
            *plan = refuse("0A000", message, "binary COPY data can't be masked");
            return Extra::None;
        }
        let mentioned = masks.mentioned_rule(&text);
        let touched = mentioned.or_else(|| {
            masks.touched_rule(
                statements
                    .iter()
                    .flat_map(|s| s.tables.iter().map(String::as_str)),
            )
        });
        Extra::Source(Arc::new(ResultSource {
            mentioned,
            touched,
            text,
            exec,
        }))
    }

    /// Why the session's access key no longer admits commands, checked at most every
    /// [`RECHECK_EVERY`]; `None` while it does (and for other credentials).
    fn credential_refusal(&self) -> Option<String> {
        const REVOKED: &str =
            "the session's access key was revoked or has expired; reconnect with a valid token";
        if self.ctx.identity.method != AuthMethod::AccessKey {
            return None;
        }
        if self.revoked.get() {
            return Some(REVOKED.into());
        }
        if self
            .credential_checked
            .get()
            .is_some_and(|t| t.elapsed() < RECHECK_EVERY)
        {
            return None;
        }
        match self.ctx.services.verifier.still_valid(&self.ctx.identity) {
            Ok(()) => {
                self.credential_checked.set(Some(Instant::now()));
                None
            }
            // Looked up and found wanting: for good.
            Err(IdentityError::BadAccessKey) => {
                self.revoked.set(true);
                Some(REVOKED.into())
            }
            // The store could not say: refuse this command, ask again for the next.
            Err(e) => Some(format!("the session's access key cannot be checked: {e}")),
        }
    }

    fn evaluate(&self, statements: &[Arc<SqlStatement>]) -> Decision {
        let deny = |reason: String| Decision {
            verdict: Verdict::Deny,
            policies: Vec::new(),
            reason: Some(reason),
            policy_version: 0,
        };
        if gateway_core::util::now_secs() > self.ctx.identity.expires_at {
            return deny("the session's token has expired; reconnect with a fresh token".into());
        }
        if let Some(reason) = self.credential_refusal() {
            return deny(reason);
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

        let metrics = &self.ctx.services.metrics;
        let counter = match decision.verdict {
            Verdict::Allow(_) => &metrics.statements_allowed,
            Verdict::Deny => &metrics.statements_denied,
            Verdict::Review { .. } => &metrics.statements_review,
        };
        counter.fetch_add(1, Relaxed);
        let bind = self.bind_for_hold.take();

        if decision.is_allowed() {
            events.push(ev);
            return Plan::Command {
                command,
                statements: statements.len(),
            };
        }
        if let Verdict::Review { .. } = decision.verdict {
            let action = worst.cedar_id();
            let approvals = &self.ctx.services.approvals;
            // A granted window stands in for review: the command runs, carrying its id.
            if let Some(id) =
                approvals.active_window(&self.ctx.identity, &self.ctx.conn.name, action)
            {
                ev.verdict = Some(gateway_core::audit::Verdict::Allow);
                ev.approval = Some(id);
                events.push(ev);
                return Plan::Command {
                    command,
                    statements: statements.len(),
                };
            }
            let bound = bind
                .as_ref()
                .and_then(|raw| raw.get(5..))
                .and_then(|body| codec::parse_bind(body).ok());
            let (fingerprint, parameters) = match &bound {
                Some(b) => (
                    gateway_core::approvals::fingerprint(text, &b.params),
                    shown_parameters(b, self.ctx.masks.as_deref(), text),
                ),
                None => (gateway_core::approvals::fingerprint(text, &[]), Vec::new()),
            };
            let tables = ev.tables.clone();
            return Plan::Hold(Box::new(Held {
                command,
                statements: statements.len(),
                text: text.to_string(),
                action,
                decision: decision.clone(),
                event: ev,
                fingerprint,
                parameters,
                tables,
            }));
        }
        events.push(ev);
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
        refuse("42501", &message, &detail)
    }

    /// Hold a command for approval: request it, tell the client, and wait for the outcome, a
    /// cancel, or the client leaving. Returns the plan for the command either way; its audit
    /// event (with the approval id) is queued with it.
    async fn hold<R: AsyncRead + Unpin>(
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
        let req = match approvals.request(&ctx.identity, new).await {
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

/// A refusal: the error the client reads in place of the command's answer.
fn refuse(code: &str, message: &str, detail: &str) -> Plan {
    let mut err = BytesMut::with_capacity(128 + message.len() + detail.len());
    codec::put_error(&mut err, "ERROR", code, message, Some(detail), None);
    Plan::Refuse {
        error: err.freeze(),
        parse_name: None,
    }
}

/// Append the frame (or its refusal substitute) to the target-bound batch.
fn forward(
    sh: &mut Shared,
    frame: Frame,
    plan: Plan,
    op: Option<PendingOp>,
    extra: Extra,
    out: &mut BytesMut,
) {
    let batch = sh.batches_sent;
    let now = Instant::now();
    let source = match extra {
        Extra::None => None,
        Extra::Source(s) => Some(s),
        Extra::Describe(p) => {
            sh.describes.push_back((batch, p));
            None
        }
    };
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
                    source: source.clone(),
                });
            }
            out.extend_from_slice(&frame.raw);
        }
        Plan::Empty => {
            sh.inflight.push_back(InFlight {
                batch,
                command: 0,
                started: now,
                source: None,
            });
            out.extend_from_slice(&frame.raw);
        }
        // Decided by `hold` before anything is forwarded.
        Plan::Hold(_) => debug_assert!(false, "a held command reached forwarding"),
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
