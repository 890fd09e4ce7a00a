//! The client side towards the target sshd: connect, check the pinned host key, log in with
//! the held key or password.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway_core::config::{Config, ConnectionConfig};
use russh::client::{self, ChannelOpenHandle};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::server;
use russh::{Channel, ChannelOpenFailure};

use crate::error::SshError;
use crate::relay;
use crate::session::{SessionCtx, SessionSlot};

/// Longest time to reach, verify and log in to the target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// How the target's host key is pinned.
#[derive(Debug, Clone)]
enum Pin {
    KnownHosts(PathBuf),
    Fingerprint(String),
}

/// Checks the target's host key against the pin; remembers why it refused one.
pub(crate) struct TargetHandler {
    pin: Pin,
    host: String,
    port: u16,
    refusal: Arc<Mutex<Option<String>>>,
    /// The session this connection serves, for channels the target opens back.
    slot: SessionSlot,
}

impl TargetHandler {
    fn refuse(&self, why: String) {
        if let Ok(mut r) = self.refusal.lock() {
            *r = Some(why);
        }
    }

    /// A channel the target opens towards the client (remote forward, agent): refused
    /// unless this session has a client connection and `wanted` holds for it; otherwise
    /// `open` opens the matching channel to the client, and once it is open the target's
    /// channel is accepted and the two are relayed.
    async fn open_back<F>(
        &self,
        channel: Channel<client::Msg>,
        reply: ChannelOpenHandle,
        wanted: impl FnOnce(&SessionCtx) -> bool,
        open: impl FnOnce(server::Handle) -> F + Send + 'static,
    ) where
        F: Future<Output = Result<Channel<server::Msg>, russh::Error>> + Send,
    {
        let session = self.slot.get().filter(|ctx| wanted(ctx)).and_then(|ctx| {
            let front = ctx.front.get()?.clone();
            Some((ctx.clone(), front))
        });
        let Some((ctx, front)) = session else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return;
        };
        tokio::spawn(async move {
            match open(front.clone()).await {
                Ok(client) => {
                    reply.accept().await;
                    relay::run(ctx, client, channel, front, None).await;
                }
                Err(_) => reply.reject(ChannelOpenFailure::ConnectFailed).await,
            }
        });
    }
}

impl client::Handler for TargetHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            self.refuse(format!(
                "target {}:{} presented a host certificate; pin a plain host key",
                self.host, self.port
            ));
            return Ok(false);
        };
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let ok = match &self.pin {
            Pin::Fingerprint(want) => *want == fingerprint,
            Pin::KnownHosts(path) => {
                matches!(
                    russh::keys::check_known_hosts_path(&self.host, self.port, key, path),
                    Ok(true)
                )
            }
        };
        if !ok {
            self.refuse(format!(
                "target host key {fingerprint} of {}:{} is not the pinned one; refusing to connect",
                self.host, self.port
            ));
        }
        Ok(ok)
    }

    /// A connection to a remote forward this session asked for: relayed to the client.
    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: Channel<client::Msg>,
        connected_address: &str,
        connected_port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let asked = |ctx: &SessionCtx| {
            ctx.remote_forwards.lock().is_ok_and(|f| {
                f.iter()
                    .any(|(a, p)| a == connected_address && *p == connected_port)
            })
        };
        let (connected, originator) = (
            connected_address.to_string(),
            originator_address.to_string(),
        );
        self.open_back(channel, reply, asked, move |front| async move {
            front
                .channel_open_forwarded_tcpip(
                    connected,
                    connected_port,
                    originator,
                    originator_port,
                )
                .await
        })
        .await;
        Ok(())
    }

    /// The target's side of a forwarded agent: relayed to the client's agent when this
    /// session's agent forwarding was allowed.
    async fn server_channel_open_agent_forward(
        &mut self,
        channel: Channel<client::Msg>,
        reply: ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let allowed = |ctx: &SessionCtx| *ctx.agent.borrow() == Some(true);
        self.open_back(channel, reply, allowed, |front| async move {
            front.channel_open_agent().await
        })
        .await;
        Ok(())
    }
}

/// A logged-in connection to the target.
pub(crate) type Target = client::Handle<TargetHandler>;

/// Connect to `conn`'s target as `user`, verify its host key and log in.
pub(crate) async fn connect(
    cfg: &Config,
    conn: &ConnectionConfig,
    user: &str,
    slot: SessionSlot,
) -> Result<Target, SshError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, connect_inner(cfg, conn, user, slot)).await {
        Ok(r) => r,
        Err(_) => Err(SshError::Target(format!(
            "target {} did not answer in time",
            conn.target
        ))),
    }
}

async fn connect_inner(
    cfg: &Config,
    conn: &ConnectionConfig,
    user: &str,
    slot: SessionSlot,
) -> Result<Target, SshError> {
    let (host, port) = conn
        .target
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_matches(['[', ']']).to_string(), p.parse().ok()?)))
        .ok_or_else(|| SshError::Gateway(format!("target `{}` is not host:port", conn.target)))?;
    let pin = match (&conn.known_hosts, &conn.host_key_fingerprint) {
        (_, Some(fp)) => Pin::Fingerprint(fp.clone()),
        (Some(f), None) => Pin::KnownHosts(cfg.resolve(f)),
        (None, None) => {
            return Err(SshError::Gateway(
                "the connection pins no target host key".into(),
            ));
        }
    };
    let refusal = Arc::new(Mutex::new(None));
    let handler = TargetHandler {
        pin,
        host: host.clone(),
        port,
        refusal: refusal.clone(),
        slot,
    };
    let config = Arc::new(client::Config {
        inactivity_timeout: None,
        nodelay: true,
        window_size: WINDOW,
        maximum_packet_size: 65535,
        ..Default::default()
    });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| SshError::Target(format!("target {}: {e}", conn.target)))?;
    let _ = tcp.set_nodelay(true);
    let mut handle = match client::connect_stream(config, tcp, handler).await {
        Ok(h) => h,
        Err(e) => {
            let why = refusal.lock().ok().and_then(|mut r| r.take());
            return Err(SshError::Target(why.unwrap_or_else(|| {
                format!("target {}: ssh handshake failed: {e}", conn.target)
            })));
        }
    };
    let auth = if let Some(file) = &conn.private_key_file {
        let path = cfg.resolve(file);
        let key = russh::keys::load_secret_key(&path, None).map_err(|e| {
            SshError::Gateway(format!(
                "{}: cannot load the private key: {e}",
                path.display()
            ))
        })?;
        let hash = handle.best_supported_rsa_hash().await?.flatten();
        handle
            .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
            .await?
    } else {
        let password = conn
            .password(&cfg.base_dir)
            .map_err(|e| SshError::Gateway(format!("connection credential unavailable: {e}")))?
            .ok_or_else(|| SshError::Gateway("the connection holds no credential".into()))?;
        handle.authenticate_password(user, password).await?
    };
    if !auth.success() {
        return Err(SshError::Target(format!(
            "target {} refused the gateway's credential for user `{user}`",
            conn.target
        )));
    }
    Ok(handle)
}

/// Channel window towards the target: large enough for bulk copies at loopback speed.
pub(crate) const WINDOW: u32 = 8 * 1024 * 1024;
