//! The server side towards the client: token login, the connect decision, and each
//! channel's requests decided by policy and audited before anything reaches the target.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use gateway_core::Identity;
use gateway_core::action::{Action, SshKind, SshRequest};
use gateway_core::approvals::{NewKind, NewRequest};
use gateway_core::audit::{AuditEvent, EventKind, IdentityRecord, Verdict as AuditVerdict};
use gateway_core::config::{ConnectionConfig, Protocol};
use gateway_core::identity::IdentityError;
use gateway_core::policy::{ConnectionRef, Decision, Verdict};
use gateway_core::services::Services;
use russh::server::{self, Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::error::SshError;
use crate::names;
use crate::relay::{self, Ctl, Started};
use crate::target::{self, Target};

/// Longest wait for token verification or an audit write.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest token or access key accepted (Entra tokens run to a few KB).
const MAX_TOKEN: usize = 16 * 1024;
/// Exit status of a command refused by the gateway (as a shell reports "cannot execute").
pub(crate) const EXIT_REFUSED: u32 = 126;
/// Exit status when the target cannot be reached.
const EXIT_TARGET: u32 = 255;

/// What a session's channels share once the client is logged in.
pub(crate) struct SessionCtx {
    pub session_id: String,
    pub identity: Identity,
    pub conn: ConnectionConfig,
    pub target_user: String,
    pub services: Arc<Services>,
    pub commands: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// The client connection, for channels the target opens towards it (remote forwards,
    /// agent). Set when the client first opens a channel or asks for a forward.
    pub front: OnceLock<server::Handle>,
    /// Remote forwards (`ssh -R`) the target listens on for this session: address, port.
    pub remote_forwards: std::sync::Mutex<Vec<(String, u32)>>,
    /// Agent forwarding: undecided, allowed or refused (decided once per session).
    pub agent: watch::Sender<Option<bool>>,
}

impl SessionCtx {
    /// Decide a channel request of this session (an exec line is several actions, one per
    /// simple command, and passes only if each does): refused outright once the session's
    /// token has expired or its access key was revoked (checked at every request), else by
    /// policy.
    fn decide(&self, actions: &[Action]) -> Decision {
        let refused = if gateway_core::util::now_secs() > self.identity.expires_at {
            Some("the session's token has expired; reconnect with a fresh token".to_string())
        } else {
            self.services
                .verifier
                .still_valid(&self.identity)
                .err()
                .map(|e| format!("the session's credential is no longer valid: {e}"))
        };
        match refused {
            Some(reason) => Decision {
                verdict: Verdict::Deny,
                policies: Vec::new(),
                reason: Some(reason),
                policy_version: 0,
            },
            None => self.services.policy.current().decide_all(
                &self.identity,
                &ConnectionRef {
                    name: &self.conn.name,
                    protocol: self.conn.protocol,
                },
                actions,
            ),
        }
    }
}

/// Set once the session has started; read by the accept task to record its end.
pub(crate) type SessionSlot = Arc<OnceLock<Arc<SessionCtx>>>;

/// The target connection: being established, ready, or refused with a reason.
enum TargetState {
    None,
    Pending(JoinHandle<Result<Target, SshError>>),
    Ready(Arc<Target>),
    Failed(String),
}

/// One session channel as the handler sees it.
struct Chan {
    ctl: Option<mpsc::Sender<Ctl>>,
    started: bool,
    /// Why every start request on this channel is refused (connect denied, no target).
    refused: Option<(String, u32)>,
}

/// One client connection.
pub(crate) struct SshHandler {
    services: Arc<Services>,
    peer: SocketAddr,
    session_id: String,
    slot: SessionSlot,
    /// Connect denied by policy: the reason every channel reads.
    refused: Option<String>,
    target: TargetState,
    channels: HashMap<ChannelId, Chan>,
}

impl SshHandler {
    pub(crate) fn new(services: Arc<Services>, peer: SocketAddr, slot: SessionSlot) -> SshHandler {
        SshHandler {
            services,
            peer,
            session_id: gateway_core::util::new_session_id(),
            slot,
            refused: None,
            target: TargetState::None,
            channels: HashMap::new(),
        }
    }

    fn logged_in(&self) -> bool {
        self.slot.get().is_some() || self.refused.is_some()
    }

    fn auth_failed(&self, conn: &str, identity: Option<&Identity>, reason: String) -> AuditEvent {
        let mut ev = AuditEvent::new(EventKind::AuthFailed, &self.session_id);
        ev.connection = Some(conn.to_string());
        ev.protocol = Some("ssh".into());
        ev.client = Some(self.peer.to_string());
        ev.identity = identity.map(IdentityRecord::from);
        ev.reason = Some(reason);
        self.services
            .metrics
            .auth_failures_total
            .fetch_add(1, Relaxed);
        ev
    }

    /// Verify the token presented for `user` and open the session. A bad token, an unknown
    /// connection or a target user the connection does not allow is refused; a denied
    /// `connect` is let in only to read the reason on each channel.
    async fn login(&mut self, user: &str, token: &str) -> Result<Auth, SshError> {
        if self.logged_in() {
            return Ok(Auth::Accept);
        }
        let login = names::parse_login(user);
        let token = token.trim();
        if token.is_empty() || token.len() > MAX_TOKEN {
            let ev = self.auth_failed(login.connection, None, IdentityError::Missing.to_string());
            let _ = self.services.audit.record_later(ev).await;
            return Ok(Auth::reject());
        }
        let verified = tokio::time::timeout(VERIFY_TIMEOUT, self.services.verifier.verify(token))
            .await
            .unwrap_or_else(|_| {
                Err(IdentityError::IssuerUnavailable {
                    issuer: "token verification".into(),
                    reason: "timed out".into(),
                })
            });
        match verified {
            Ok(identity) => self.open_session(user, identity).await,
            Err(e) => {
                tracing::debug!(peer = %self.peer, error = %e, "ssh login refused");
                let ev = self.auth_failed(login.connection, None, e.to_string());
                let _ = self.services.audit.record_later(ev).await;
                Ok(Auth::reject())
            }
        }
    }

    /// Open the session for a verified `identity` on the connection `user` names.
    async fn open_session(&mut self, user: &str, identity: Identity) -> Result<Auth, SshError> {
        let login = names::parse_login(user);
        let conn = self
            .services
            .config
            .connection(login.connection)
            .filter(|c| c.protocol == Protocol::Ssh)
            .cloned();
        let Some(conn) = conn else {
            let msg = format!(
                "ssh connection \"{}\" is not configured on this gateway",
                login.connection
            );
            let ev = self.auth_failed(login.connection, Some(&identity), msg);
            let _ = self.services.audit.record_later(ev).await;
            return Ok(Auth::reject());
        };
        let default_user = conn.user.clone().unwrap_or_default();
        let Some(target_user) =
            names::target_user(login.target_user, &default_user, &conn.users).map(str::to_string)
        else {
            let msg = format!(
                "target user `{}` is not allowed on connection \"{}\"",
                login.target_user.unwrap_or_default(),
                conn.name
            );
            let ev = self.auth_failed(&conn.name, Some(&identity), msg);
            let _ = self.services.audit.record_later(ev).await;
            return Ok(Auth::reject());
        };
        let decision = self.services.policy.current().decide(
            &identity,
            &ConnectionRef {
                name: &conn.name,
                protocol: conn.protocol,
            },
            &Action::Connect,
        );
        if !decision.is_allowed() {
            let reason = decision
                .reason
                .clone()
                .unwrap_or_else(|| "denied by policy".into());
            let mut ev = self.auth_failed(&conn.name, Some(&identity), reason.clone());
            ev.action = Some("connect".into());
            ev.verdict = Some(decision.audit_verdict());
            ev.policies = decision.policies.clone();
            let _ = self.services.audit.record_later(ev).await;
            self.refused = Some(format!(
                "portcullis: access to \"{}\" denied: {reason}",
                conn.name
            ));
            return Ok(Auth::Accept);
        }

        // The session starts only once its start is on record.
        let mut start = AuditEvent::new(EventKind::SessionStart, &self.session_id);
        start.identity = Some(IdentityRecord::from(&identity));
        start.connection = Some(conn.name.clone());
        start.protocol = Some("ssh".into());
        start.client = Some(self.peer.to_string());
        start.action = Some("connect".into());
        start.verdict = Some(decision.audit_verdict());
        start.policies = decision.policies.clone();
        start.detail = Some(serde_json::json!({ "target_user": target_user }));
        let recorded = tokio::time::timeout(VERIFY_TIMEOUT, self.services.audit.record(start))
            .await
            .unwrap_or_else(|_| Err(gateway_core::Error::Audit("timed out".into())));
        if let Err(e) = recorded {
            self.services
                .metrics
                .audit_failures_total
                .fetch_add(1, Relaxed);
            tracing::error!(error = %e, "audit unavailable; ssh session refused");
            return Ok(Auth::reject());
        }
        // Reach the target while the client opens its channel.
        let cfg = self.services.config.clone();
        let c = conn.clone();
        let u = target_user.clone();
        let slot = self.slot.clone();
        self.target = TargetState::Pending(tokio::spawn(async move {
            target::connect(&cfg, &c, &u, slot).await
        }));
        self.services.metrics.sessions_total.fetch_add(1, Relaxed);
        self.services.metrics.sessions_active.fetch_add(1, Relaxed);
        tracing::info!(session_id = %self.session_id, identity = %identity.principal(), connection = %conn.name, "ssh session opened");
        let _ = self.slot.set(Arc::new(SessionCtx {
            session_id: self.session_id.clone(),
            identity,
            conn,
            target_user,
            services: self.services.clone(),
            commands: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            front: OnceLock::new(),
            remote_forwards: std::sync::Mutex::new(Vec::new()),
            agent: watch::Sender::new(None),
        }));
        Ok(Auth::Accept)
    }

    /// The target connection, waiting for it if it is still being set up.
    async fn target(&mut self) -> Result<Arc<Target>, String> {
        if let TargetState::Pending(_) = self.target {
            let TargetState::Pending(join) = std::mem::replace(&mut self.target, TargetState::None)
            else {
                return Err("no target connection".into());
            };
            self.target = match join.await {
                Ok(Ok(t)) => TargetState::Ready(Arc::new(t)),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "ssh target connection failed");
                    self.services
                        .metrics
                        .target_errors_total
                        .fetch_add(1, Relaxed);
                    TargetState::Failed(format!("portcullis: {e}"))
                }
                Err(e) => TargetState::Failed(format!("portcullis: target connection failed: {e}")),
            };
        }
        match &self.target {
            TargetState::Ready(t) => Ok(t.clone()),
            TargetState::Failed(e) => Err(e.clone()),
            TargetState::None | TargetState::Pending(_) => {
                Err("portcullis: no target connection".into())
            }
        }
    }

    /// Decide a start request (exec, shell, sftp), record it, and answer the client.
    async fn start_request(
        &mut self,
        channel: ChannelId,
        kind: SshKind,
        command: Option<String>,
        session: &mut Session,
    ) -> Result<(), SshError> {
        let Some(chan) = self.channels.get_mut(&channel) else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        if let Some((msg, code)) = chan.refused.clone() {
            refuse(session, channel, &msg, code)?;
            return Ok(());
        }
        if chan.started {
            // One start request per channel, as sshd enforces.
            session.channel_failure(channel)?;
            return Ok(());
        }
        chan.started = true;
        let ctl = chan.ctl.take();
        let Some(ctx) = self.slot.get().cloned() else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        let command: Option<Arc<str>> = command.map(Arc::from);
        let actions = match (kind, &command) {
            (SshKind::Exec, Some(line)) => SshRequest::exec(line.clone()),
            _ => vec![Action::Ssh(SshRequest::new(kind, command.clone()))],
        };
        let decision = ctx.decide(&actions);
        let number = ctx.commands.fetch_add(1, Relaxed) + 1;
        let approvals = &ctx.services.approvals;
        // A granted window stands in for review.
        let window = match decision.verdict {
            Verdict::Review { .. } => {
                approvals.active_window(&ctx.identity, &ctx.conn.name, kind.cedar_id())
            }
            _ => None,
        };
        let held = match (&decision.verdict, &window) {
            (Verdict::Review { .. }, None) => {
                let text = command.as_deref().unwrap_or(kind.cedar_id()).to_string();
                let new = NewRequest::new(
                    NewKind::OneTime {
                        fingerprint: gateway_core::approvals::fingerprint(&text, &[]),
                        statement: text,
                        session: ctx.session_id.clone(),
                        parameters: Vec::new(),
                        tables: Vec::new(),
                    },
                    &ctx.conn.name,
                    kind.cedar_id(),
                )
                .with_review(&decision);
                Some(approvals.request(&ctx.identity, new).await)
            }
            _ => None,
        };
        let (verdict, approval) = match (&decision.verdict, &window, &held) {
            (Verdict::Review { .. }, Some(id), _) => (AuditVerdict::Allow, Some(id.clone())),
            (_, _, Some(Ok(req))) => (AuditVerdict::Review, Some(req.id.clone())),
            (_, _, Some(Err(_))) => (AuditVerdict::Deny, None),
            _ => (decision.audit_verdict(), None),
        };
        let recorded = record_command(
            &ctx,
            number,
            kind,
            command.as_deref(),
            &decision,
            verdict,
            approval.clone(),
            exec_detail(&actions),
        )
        .await;
        let refusal = match (&decision.verdict, recorded, &held) {
            (_, Err(e), _) => Some(format!("portcullis: audit is unavailable: {e}")),
            (Verdict::Allow(_), Ok(()), _) => None,
            (Verdict::Review { .. }, Ok(()), None) => None, // a window covers it
            (Verdict::Review { .. }, Ok(()), Some(Ok(req))) => {
                let who = if req.approver_groups.is_empty() {
                    "anyone else".to_string()
                } else {
                    format!("members of {}", req.approver_groups.join(", "))
                };
                let notice = format!(
                    "portcullis: {} held for approval {id}: {n} approval(s) needed from {who}; \
                     approve with `portcullis approvals approve {id}`\r\n",
                    kind.cedar_id(),
                    id = req.id,
                    n = req.required,
                );
                session.channel_success(channel)?;
                session.extended_data(channel, 1, Bytes::from(notice))?;
                if let Some(ctl) = ctl {
                    let _ = ctl
                        .send(Ctl::Hold {
                            id: req.id.clone(),
                            started: Started {
                                kind,
                                number,
                                policies: decision.policies.clone(),
                            },
                        })
                        .await;
                }
                return Ok(());
            }
            (Verdict::Review { .. }, Ok(()), Some(Err(e))) => Some(format!(
                "portcullis: approval required ({}), but it could not be requested: {e}",
                decision.reason.as_deref().unwrap_or("policy")
            )),
            (Verdict::Deny, Ok(()), _) => Some(format!(
                "portcullis: {} denied by policy: {}",
                kind.cedar_id(),
                decision.reason.as_deref().unwrap_or("not permitted")
            )),
        };
        match refusal {
            None => {
                session.channel_success(channel)?;
                if let Some(ctl) = ctl {
                    let _ = ctl
                        .send(Ctl::Go(Started {
                            kind,
                            number,
                            policies: decision.policies.clone(),
                        }))
                        .await;
                }
            }
            Some(msg) => {
                tracing::info!(session_id = %ctx.session_id, action = kind.cedar_id(), "ssh request refused");
                refuse(session, channel, &msg, EXIT_REFUSED)?;
                if let Some(ctl) = ctl {
                    let _ = ctl.send(Ctl::Stop).await;
                }
            }
        }
        Ok(())
    }

    /// Accept a session channel only to tell the client, at its first start request, why
    /// nothing runs on it (`msg`, exit status `code`).
    async fn accept_refused(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        msg: String,
        code: u32,
    ) {
        self.channels.insert(
            channel.id(),
            Chan {
                ctl: None,
                started: false,
                refused: Some((msg, code)),
            },
        );
        reply.accept().await;
        tokio::spawn(drain(channel));
    }

    /// Decide and record a forward request; `true` when policy allows it.
    async fn decide_forward(&self, what: String) -> bool {
        let Some(ctx) = self.slot.get().cloned() else {
            return false;
        };
        let command: Arc<str> = Arc::from(what);
        let decision = ctx.decide(&[Action::Ssh(SshRequest::new(
            SshKind::Forward,
            Some(command.clone()),
        ))]);
        let number = ctx.commands.fetch_add(1, Relaxed) + 1;
        let recorded = record_command(
            &ctx,
            number,
            SshKind::Forward,
            Some(&command),
            &decision,
            decision.audit_verdict(),
            None,
            None,
        )
        .await;
        decision.is_allowed() && recorded.is_ok()
    }
}

/// What the parser saw in an exec line, for its audit event: the programs it runs and why
/// part of it could not be known before it ran.
fn exec_detail(actions: &[Action]) -> Option<serde_json::Value> {
    let Some(Action::Ssh(SshRequest {
        exec: Some(exec), ..
    })) = actions.first()
    else {
        return None;
    };
    let mut detail = serde_json::json!({ "programs": exec.line.programs });
    if !exec.line.opaque.is_empty() {
        detail["opaque"] = serde_json::json!(exec.line.opaque);
    }
    Some(detail)
}

/// Record a decided request durably before it is answered or forwarded.
#[allow(clippy::too_many_arguments)]
async fn record_command(
    ctx: &SessionCtx,
    number: u64,
    kind: SshKind,
    command: Option<&str>,
    decision: &Decision,
    verdict: AuditVerdict,
    approval: Option<String>,
    detail: Option<serde_json::Value>,
) -> Result<(), gateway_core::Error> {
    let mut ev = AuditEvent::new(EventKind::Command, &ctx.session_id);
    ev.identity = Some(IdentityRecord::from(&ctx.identity));
    ev.connection = Some(ctx.conn.name.clone());
    ev.protocol = Some("ssh".into());
    ev.command = Some(number);
    ev.statement = Some(match (kind, command) {
        (_, Some(c)) => c.to_string(),
        (SshKind::Shell, None) => "shell".into(),
        (SshKind::Sftp, None) => "subsystem sftp".into(),
        (_, None) => String::new(),
    });
    ev.action = Some(kind.cedar_id().into());
    ev.verdict = Some(verdict);
    ev.approval = approval;
    ev.policies = decision.policies.clone();
    ev.reason = decision.reason.clone();
    ev.detail = detail;
    tokio::time::timeout(VERIFY_TIMEOUT, ctx.services.audit.record(ev))
        .await
        .unwrap_or_else(|_| Err(gateway_core::Error::Audit("timed out".into())))
        .map(|_| ())
}

/// Answer a start request the gateway refuses: the reason on stderr, then `code` as the
/// exit status, and the channel closed. The target never sees the request.
fn refuse(session: &mut Session, channel: ChannelId, msg: &str, code: u32) -> Result<(), SshError> {
    session.channel_success(channel)?;
    let mut text = msg.trim_end().to_string();
    text.push_str("\r\n");
    session.extended_data(channel, 1, Bytes::from(text))?;
    session.exit_status_request(channel, code)?;
    session.eof(channel)?;
    session.close(channel)?;
    Ok(())
}

/// The methods a client may log in with; public keys only when some are mapped (an
/// OpenSSH client offers its keys first, and each refusal costs a rejection delay).
pub(crate) fn methods(keys_mapped: bool) -> MethodSet {
    let mut m = MethodSet::empty();
    if keys_mapped {
        m.push(MethodKind::PublicKey);
    }
    m.push(MethodKind::Password);
    m.push(MethodKind::KeyboardInteractive);
    m
}

/// `<algorithm> <base64>` of a public key, as `[[identity.ssh_keys]]` entries are compared.
fn key_text(key: &russh::keys::PublicKey) -> Option<String> {
    let text = key.to_openssh().ok()?;
    let mut parts = text.split_whitespace();
    Some(format!("{} {}", parts.next()?, parts.next()?))
}

impl server::Handler for SshHandler {
    type Error = SshError;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        self.login(user, password).await
    }

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // Spare the client a signature for a key that maps to nobody.
        let mapped = key_text(offer.public_key)
            .and_then(|k| self.services.verifier.verify_ssh_key(&k))
            .is_some();
        Ok(if mapped { Auth::Accept } else { Auth::reject() })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.logged_in() {
            return Ok(Auth::Accept);
        }
        // russh calls this only after checking the client's signature with this key.
        match key_text(key.public_key).and_then(|k| self.services.verifier.verify_ssh_key(&k)) {
            Some(identity) => self.open_session(user, identity).await,
            None => Ok(Auth::reject()),
        }
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        let answer = response.and_then(|mut r| r.next());
        match answer {
            None => Ok(Auth::Partial {
                name: "portcullis".into(),
                instructions: "Log in with a Portcullis token or access key.".into(),
                // "Password" so that sshpass and SSH_ASKPASS helpers recognise the prompt.
                prompts: vec![("Password (token): ".into(), false)].into(),
            }),
            Some(bytes) => match std::str::from_utf8(&bytes) {
                Ok(token) => {
                    let token = token.to_string();
                    self.login(user, &token).await
                }
                Err(_) => Ok(Auth::reject()),
            },
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let id = channel.id();
        if let Some(msg) = self.refused.clone() {
            self.accept_refused(channel, reply, msg, EXIT_REFUSED).await;
            return Ok(());
        }
        let Some(ctx) = self.slot.get().cloned() else {
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let _ = ctx.front.set(session.handle());
        let backend = match self.target().await {
            Ok(t) => t
                .channel_open_session()
                .await
                .map_err(|e| format!("portcullis: the target refused a session channel: {e}")),
            Err(e) => Err(e),
        };
        match backend {
            Ok(backend) => {
                let (tx, rx) = mpsc::channel(1);
                self.channels.insert(
                    id,
                    Chan {
                        ctl: Some(tx),
                        started: false,
                        refused: None,
                    },
                );
                reply.accept().await;
                tokio::spawn(relay::run(
                    ctx,
                    channel,
                    backend,
                    session.handle(),
                    Some(rx),
                ));
            }
            Err(msg) => self.accept_refused(channel, reply, msg, EXIT_TARGET).await,
        }
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let what = format!("direct-tcpip {host_to_connect}:{port_to_connect}");
        if self.refused.is_some() || !self.decide_forward(what).await {
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        let Some(ctx) = self.slot.get().cloned() else {
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let backend = match self.target().await {
            Ok(t) => t
                .channel_open_direct_tcpip(
                    host_to_connect,
                    port_to_connect,
                    originator_address,
                    originator_port,
                )
                .await
                .ok(),
            Err(_) => None,
        };
        let Some(backend) = backend else {
            reply.reject(russh::ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        };
        // A forward has no start request: the relay runs with nothing left to decide.
        reply.accept().await;
        tokio::spawn(relay::run(ctx, channel, backend, session.handle(), None));
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        // The target listens (as `ssh -R` asks it to); connections to it come back as
        // forwarded-tcpip channels that the target handler relays to the client.
        let what = format!("tcpip-forward {address}:{port}");
        if self.refused.is_some() || !self.decide_forward(what).await {
            return Ok(false);
        }
        let Some(ctx) = self.slot.get().cloned() else {
            return Ok(false);
        };
        let _ = ctx.front.set(session.handle());
        let Ok(t) = self.target().await else {
            return Ok(false);
        };
        match t.tcpip_forward(address, *port).await {
            Ok(bound) => {
                if *port == 0 {
                    *port = bound;
                }
                if let Ok(mut f) = ctx.remote_forwards.lock() {
                    f.push((address.to_string(), *port));
                }
                Ok(true)
            }
            Err(e) => {
                tracing::info!(session_id = %ctx.session_id, error = %e, "the target refused a remote forward");
                Ok(false)
            }
        }
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Some(ctx) = self.slot.get().cloned() else {
            return Ok(false);
        };
        let known = ctx.remote_forwards.lock().is_ok_and(|mut f| {
            let before = f.len();
            f.retain(|(a, p)| !(a == address && *p == port));
            f.len() != before
        });
        if !known {
            return Ok(false);
        }
        let Ok(t) = self.target().await else {
            return Ok(false);
        };
        Ok(t.cancel_tcpip_forward(address, port).await.is_ok())
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Some(ctx) = self.slot.get().cloned() else {
            return Ok(false);
        };
        // Decided and recorded once per session; the channel's relay waits for it before
        // it passes the request on to the target.
        if let Some(allowed) = *ctx.agent.borrow() {
            return Ok(allowed);
        }
        let allowed = self.refused.is_none() && self.decide_forward("agent".into()).await;
        ctx.agent.send_replace(Some(allowed));
        Ok(allowed)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.channels.get(&channel) {
            Some(c) if !c.started => session.channel_success(channel)?,
            _ => session.channel_failure(channel)?,
        }
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let extra = self
            .slot
            .get()
            .map(|c| c.conn.allow_env.as_slice())
            .unwrap_or(&[]);
        if names::env_allowed(variable_name, extra) {
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start_request(channel, SshKind::Shell, None, session)
            .await
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = String::from_utf8_lossy(data).into_owned();
        self.start_request(channel, SshKind::Exec, Some(command), session)
            .await
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name == "sftp" {
            self.start_request(channel, SshKind::Sftp, None, session)
                .await
        } else {
            session.channel_failure(channel)?;
            Ok(())
        }
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        Ok(())
    }
}

/// Read and drop what a refused channel receives until the client closes it.
async fn drain(mut channel: Channel<Msg>) {
    while let Some(m) = channel.wait().await {
        if matches!(m, russh::ChannelMsg::Close) {
            break;
        }
    }
}
