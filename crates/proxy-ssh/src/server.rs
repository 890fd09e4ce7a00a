//! The SSH listener: accepts connections and runs one russh server session each; records
//! the end of every session that started.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use gateway_core::identity::watch::{CredentialState, RECHECK_EVERY};
use gateway_core::services::Services;
use russh::server;
use tokio::net::TcpListener;

use crate::error::SshError;
use crate::handler::{SshHandler, methods};
use crate::session::SessionSlot;

/// An SSH front end for every `ssh` connection in the config.
pub struct SshProxy {
    services: Arc<Services>,
    config: Arc<server::Config>,
}

impl SshProxy {
    /// A proxy using `services`, with the gateway's host key from the state directory
    /// (created on first start).
    pub fn new(services: Arc<Services>) -> Result<Arc<SshProxy>, SshError> {
        let key = crate::hostkey::load_or_create(&services.config.state_dir())?;
        let config = server::Config {
            server_id: russh::SshId::Standard("SSH-2.0-portcullis".into()),
            methods: methods(!services.config.identity.ssh_keys.is_empty()),
            auth_rejection_time: Duration::from_secs(1),
            // OpenSSH clients probe with "none" first; answering that at once costs nothing.
            auth_rejection_time_initial: Some(Duration::ZERO),
            keys: vec![key],
            inactivity_timeout: Some(Duration::from_secs(3600)),
            nodelay: true,
            window_size: crate::target::WINDOW,
            maximum_packet_size: 65535,
            max_auth_attempts: 6,
            ..Default::default()
        };
        Ok(Arc::new(SshProxy {
            services,
            config: Arc::new(config),
        }))
    }

    /// The gateway's host key fingerprint (`SHA256:...`), for operators and tests.
    pub fn host_key_fingerprint(&self) -> String {
        self.config
            .keys
            .first()
            .map(|k| {
                k.public_key()
                    .fingerprint(russh::keys::HashAlg::Sha256)
                    .to_string()
            })
            .unwrap_or_default()
    }

    /// Accept connections until the listener fails.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        gateway_core::listener::accept_each(listener, |tcp, peer| {
            let _ = tcp.set_nodelay(true);
            let proxy = self.clone();
            tokio::spawn(async move {
                let slot: SessionSlot = Arc::default();
                let handler = SshHandler::new(proxy.services.clone(), peer, slot.clone());
                let started = Instant::now();
                let ended = Arc::new(std::sync::OnceLock::new());
                let outcome = match server::run_stream(proxy.config.clone(), tcp, handler).await {
                    Ok(running) => {
                        let watch = tokio::spawn(watch_credential(
                            slot.clone(),
                            running.handle(),
                            ended.clone(),
                        ));
                        let outcome = running.await;
                        watch.abort();
                        outcome
                    }
                    Err(e) => Err(e),
                };
                let Some(ctx) = slot.get() else {
                    if let Err(e) = outcome {
                        tracing::debug!(%peer, error = %e, "ssh connection ended before login");
                    }
                    return;
                };
                proxy
                    .services
                    .metrics
                    .protocol(gateway_core::config::Protocol::Ssh)
                    .sessions_active
                    .fetch_sub(1, Relaxed);
                let mut end = ctx.gate.end();
                end.duration_us = Some(started.elapsed().as_micros() as u64);
                end.detail = Some(serde_json::json!({
                    "bytes_in": ctx.bytes_in.load(Relaxed),
                    "bytes_out": ctx.bytes_out.load(Relaxed),
                    "commands": ctx.gate.commands(),
                    "target_user": ctx.target_user,
                }));
                if let Some(why) = ended.get() {
                    end.error = Some(why.clone());
                } else if let Err(e) = &outcome {
                    end.error = Some(e.to_string());
                }
                tracing::info!(session_id = %ctx.session_id, "ssh session closed");
                let _ = proxy.services.audit.record_later(end).await;
            });
        })
        .await
    }
}

/// End the session once the credential it logged in with no longer holds (an access key
/// revoked or expired): channels already open, an interactive shell above all, do not
/// outlive it. The reason goes into `ended` for the session's end event.
async fn watch_credential(
    slot: SessionSlot,
    front: server::Handle,
    ended: Arc<std::sync::OnceLock<String>>,
) {
    loop {
        tokio::time::sleep(RECHECK_EVERY).await;
        let Some(ctx) = slot.get() else {
            continue;
        };
        match ctx
            .gate
            .credential()
            .state(&ctx.services.verifier, ctx.identity())
        {
            CredentialState::Valid => {}
            CredentialState::Revoked => {
                let why = "the session's access key was revoked or has expired";
                tracing::warn!(session_id = %ctx.session_id, "{why}; ending the ssh session");
                let _ = ended.set(why.to_string());
                let _ = front
                    .disconnect(
                        russh::Disconnect::ByApplication,
                        format!("portcullis: {why}; reconnect with a valid token"),
                        String::new(),
                    )
                    .await;
                return;
            }
            // The store could not say; every request is checked again when it comes.
            CredentialState::Unknown(e) => {
                tracing::debug!(error = %e, "access key check failed; retried")
            }
        }
    }
}

impl gateway_core::listener::ProtocolListener for SshProxy {
    fn protocol(&self) -> gateway_core::config::Protocol {
        gateway_core::config::Protocol::Ssh
    }

    fn ready_detail(&self) -> String {
        format!("host key {}", self.host_key_fingerprint())
    }

    fn serve_on(self: Arc<Self>, listener: TcpListener) -> gateway_core::listener::Serving {
        Box::pin(self.serve(listener))
    }
}
