//! The client's requests as russh delivers them: authentication, channel opens, forwarding
//! and the start requests each channel makes.

use super::*;

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
