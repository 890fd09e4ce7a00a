//! One client connection from accept to close: PRELOGIN and TLS, the token in LOGIN7, the
//! `connect` decision, the target login with the held credential, then the relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::BytesMut;
use gateway_core::config::Protocol;
use gateway_core::gate;
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::codec::messages::{Done, EnvChange, FeatureAck};
use crate::codec::packet;
use crate::codec::write::{self, DoneKind};
use crate::ctx::SessionCtx;
use crate::front;
use crate::server::TdsProxy;
use crate::target::{self, LoginFrom};
use crate::{relay, wire};

/// Serve one accepted connection to its end.
pub(crate) async fn handle(proxy: Arc<TdsProxy>, tcp: TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let accepted = tokio::time::timeout(front::LOGIN_TIMEOUT, front::accept(&proxy, tcp)).await;
    let mut client = match accepted {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "tds handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "tds handshake timed out");
            return;
        }
    };
    let services = proxy.services.clone();
    let opening = gate::Opening::new(services.clone(), Protocol::Tds, peer.to_string());
    let conn_name = client.connection_name();
    let Some(token) = client.token().map(str::to_string) else {
        opening
            .refused(&conn_name, None, "no token in the login")
            .await;
        front::refuse_login(
            &mut client.stream,
            "portcullis: login failed: send a token (an access token, or an access key from `portcullis token exchange` as the password)",
        )
        .await;
        return;
    };
    let verified = services.verifier.verify_in_time(&token).await;
    let identity = match verified {
        Ok(id) => id,
        Err(e) => {
            opening.refused(&conn_name, None, &e.to_string()).await;
            front::refuse_login(
                &mut client.stream,
                &format!("portcullis: login failed: {e}"),
            )
            .await;
            return;
        }
    };
    let admission = match opening.admit(&identity, &conn_name).await {
        Ok(a) => a,
        Err(e) => {
            front::refuse_login(
                &mut client.stream,
                &format!("portcullis: login failed: {e}"),
            )
            .await;
            return;
        }
    };
    let conn = admission.conn.clone();
    let masks = services
        .masking
        .as_ref()
        .and_then(|m| m.for_session(&conn.name, &identity.groups));
    let span = tracing::info_span!("session", session_id = %opening.session_id(), identity = %identity.principal(), connection = %conn.name);
    async move {
        let held = match proxy.held.resolve(&conn, &services.config.base_dir).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "the connection's credential is unavailable");
                opening
                    .refused(&conn.name, Some(&identity), &format!("credential: {e}"))
                    .await;
                front::refuse_login(
                    &mut client.stream,
                    "portcullis: login failed: the connection's credential is unavailable",
                )
                .await;
                return;
            }
        };
        let from = LoginFrom {
            client: &client.login,
            credential: held.credential(),
        };
        let target = match target::connect(&conn, &services.config.base_dir, &from).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "target login failed");
                opening
                    .refused(&conn.name, Some(&identity), &format!("target: {e}"))
                    .await;
                front::refuse_login(
                    &mut client.stream,
                    &format!("portcullis: the target could not be reached: {e}"),
                )
                .await;
                return;
            }
        };
        let detail = serde_json::json!({
            "client_app": client.login.app_name,
            "client_host": client.login.host_name,
            "fedauth": client.fedauth(),
        });
        let gate = match opening.start(identity, &admission, Some(detail)).await {
            Ok(g) => g,
            Err(e) => {
                front::refuse_login(&mut client.stream, &format!("portcullis: {e}")).await;
                return;
            }
        };
        // The target's login answer, as the gateway's own: the FEDAUTH acknowledgement
        // the client is owed instead of the target's features.
        // The database the client is in is the one it named (the connection), whatever the
        // target's database is called.
        let mut reply = BytesMut::with_capacity(target.login_tokens.len() + 128);
        let db = EnvChange::Database {
            new: conn.name.clone(),
            old: "master".into(),
        };
        let mut acks = Vec::new();
        if client.fedauth() {
            acks.push(FeatureAck::fedauth());
        }
        let written = write::write_env_change(&mut reply, &db).and_then(|()| {
            reply.extend_from_slice(&target.login_tokens);
            if client.login.has_features() {
                write::write_feature_ext_ack(&mut reply, &acks)?;
            }
            write::write_done(&mut reply, DoneKind::Done, &Done::with_status(0));
            Ok(())
        });
        if let Err(e) = written {
            front::refuse_login(
                &mut client.stream,
                &format!("portcullis: login failed: {e}"),
            )
            .await;
            return;
        }
        if wire::write_message(
            &mut client.stream,
            packet::TABULAR_RESULT,
            &reply,
            front::INITIAL_PACKET,
        )
        .await
        .is_err()
        {
            return;
        }
        let ctx = SessionCtx {
            gate,
            services: services.clone(),
            packet_size: target.packet_size,
            database: conn.name.clone(),
            masks,
        };
        let started = std::time::Instant::now();
        let outcome = relay::run(&ctx, client.stream, client.buf, target.stream, target.buf).await;
        services
            .metrics
            .protocol(Protocol::Tds)
            .sessions_active
            .fetch_sub(1, Relaxed);
        let mut end = ctx.gate.end();
        end.duration_us = Some(started.elapsed().as_micros() as u64);
        end.detail = Some(serde_json::json!({ "commands": ctx.gate.commands() }));
        if let Err(e) = &outcome {
            end.error = Some(e.to_string());
            tracing::info!(error = %e, "session ended");
        } else {
            tracing::info!("session closed");
        }
        let _ = services.audit.record_later(end).await;
    }
    .instrument(span)
    .await;
}
