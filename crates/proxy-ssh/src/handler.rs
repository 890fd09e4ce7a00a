//! The server side towards the client: token login, the connect decision, and each
//! channel's requests decided by policy and audited before anything reaches the target.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use gateway_core::Identity;
use gateway_core::action::SshKind;
use gateway_core::config::Protocol;
use gateway_core::gate::{Gated, OpenRefusal, Opening};
use gateway_core::identity::IdentityError;
use gateway_core::services::Services;
use russh::server::{self, Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::error::SshError;
use crate::names;
use crate::relay::{self, Ctl, Started};
use crate::session::{self, SessionCtx, SessionSlot};
use crate::target::{self, Target};

/// Longest token or access key accepted (Entra tokens run to a few KB).
const MAX_TOKEN: usize = 16 * 1024;
/// Exit status of a command refused by the gateway (as a shell reports "cannot execute").
pub(crate) const EXIT_REFUSED: u32 = 126;
/// Exit status when the target cannot be reached.
const EXIT_TARGET: u32 = 255;

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
    /// Until the session starts: records refusals, and starts it.
    opening: Option<Opening>,
    slot: SessionSlot,
    /// Connect denied by policy: the reason every channel reads.
    refused: Option<String>,
    target: TargetState,
    channels: HashMap<ChannelId, Chan>,
}

impl SshHandler {
    pub(crate) fn new(services: Arc<Services>, peer: SocketAddr, slot: SessionSlot) -> SshHandler {
        let opening = Opening::new(services.clone(), Protocol::Ssh, peer.to_string());
        SshHandler {
            services,
            peer,
            session_id: opening.session_id().to_string(),
            opening: Some(opening),
            slot,
            refused: None,
            target: TargetState::None,
            channels: HashMap::new(),
        }
    }

    fn logged_in(&self) -> bool {
        self.slot.get().is_some() || self.refused.is_some()
    }

    /// Record a refused login (`auth_failed`).
    async fn refused(&self, conn: &str, identity: Option<&Identity>, reason: &str) {
        if let Some(o) = &self.opening {
            o.refused(conn, identity, reason).await;
        }
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
            self.refused(login.connection, None, &IdentityError::Missing.to_string())
                .await;
            return Ok(Auth::reject());
        }
        let verified = self.services.verifier.verify_in_time(token).await;
        match verified {
            Ok(identity) => self.open_session(user, identity).await,
            Err(e) => {
                tracing::debug!(peer = %self.peer, error = %e, "ssh login refused");
                self.refused(login.connection, None, &e.to_string()).await;
                Ok(Auth::reject())
            }
        }
    }

    /// Open the session for a verified `identity` on the connection `user` names.
    async fn open_session(&mut self, user: &str, identity: Identity) -> Result<Auth, SshError> {
        let login = names::parse_login(user);
        let Some(opening) = self.opening.take() else {
            return Ok(Auth::reject());
        };
        let admission = match opening.admit(&identity, login.connection).await {
            Ok(a) => a,
            Err(OpenRefusal::Denied(reason)) => {
                // Let in only to read why, on every channel.
                self.refused = Some(format!(
                    "portcullis: access to \"{}\" denied: {reason}",
                    login.connection
                ));
                return Ok(Auth::Accept);
            }
            Err(_) => {
                self.opening = Some(opening);
                return Ok(Auth::reject());
            }
        };
        let conn = admission.conn.clone();
        let default_user = conn.user.clone().unwrap_or_default();
        let Some(target_user) =
            names::target_user(login.target_user, &default_user, &conn.users).map(str::to_string)
        else {
            let msg = format!(
                "target user `{}` is not allowed on connection \"{}\"",
                login.target_user.unwrap_or_default(),
                conn.name
            );
            opening.refused(&conn.name, Some(&identity), &msg).await;
            self.opening = Some(opening);
            return Ok(Auth::reject());
        };
        let principal = identity.principal();
        let detail = serde_json::json!({ "target_user": target_user });
        let gate = match opening.start(identity, &admission, Some(detail)).await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "ssh session refused");
                return Ok(Auth::reject());
            }
        };
        // Reach the target while the client opens its channel.
        let cfg = self.services.config.clone();
        let c = conn.clone();
        let u = target_user.clone();
        let slot = self.slot.clone();
        self.target = TargetState::Pending(tokio::spawn(async move {
            target::connect(&cfg, &c, &u, slot).await
        }));
        tracing::info!(session_id = %self.session_id, identity = %principal, connection = %conn.name, "ssh session opened");
        let _ = self.slot.set(Arc::new(SessionCtx {
            session_id: self.session_id.clone(),
            gate,
            conn,
            target_user,
            services: self.services.clone(),
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
                        .protocol(gateway_core::config::Protocol::Ssh)
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
        match ctx.gate.admit(session::command(kind, command)).await {
            Gated::Forward(admitted) => {
                session.channel_success(channel)?;
                if let Some(ctl) = ctl {
                    let _ = ctl.send(Ctl::Go(Started { kind, admitted })).await;
                }
            }
            Gated::Hold(held) => {
                let notice = format!("portcullis: {}\r\n", held.notice(kind.cedar_id()));
                session.channel_success(channel)?;
                session.extended_data(channel, 1, Bytes::from(notice))?;
                if let Some(ctl) = ctl {
                    let _ = ctl.send(Ctl::Hold { held, kind }).await;
                }
            }
            Gated::Refuse(r) => {
                tracing::info!(session_id = %ctx.session_id, action = kind.cedar_id(), "ssh request refused");
                refuse(
                    session,
                    channel,
                    &format!("portcullis: {}", r.message),
                    EXIT_REFUSED,
                )?;
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
        let cmd = session::command(SshKind::Forward, Some(Arc::from(what)));
        matches!(ctx.gate.admit(cmd).await, Gated::Forward(_))
    }
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

/// Read and drop what a refused channel receives until the client closes it.
async fn drain(mut channel: Channel<Msg>) {
    while let Some(m) = channel.wait().await {
        if matches!(m, russh::ChannelMsg::Close) {
            break;
        }
    }
}

mod channels;
