//! One client connection from accept to close: startup, token, connect policy, target login,
//! then the relay; audit events for each step.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::BytesMut;
use gateway_core::gate;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::cancel::{HoldControl, TargetKey};
use crate::codec;
use crate::ctx::SessionCtx;
use crate::error::PgError;
use crate::front::{self, Opening};
use crate::server::PgProxy;
use crate::{relay, target};

/// Serve one accepted connection to its end.
pub(crate) async fn handle(proxy: Arc<PgProxy>, tcp: TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    // One deadline for everything before the token is verified.
    let deadline = tokio::time::Instant::now() + front::STARTUP_TIMEOUT;
    let opening = tokio::time::timeout_at(
        deadline,
        front::open(tcp, proxy.tls.as_ref(), proxy.tls_required, &proxy.cancels),
    )
    .await;
    let (mut stream, mut buf, version, params) = match opening {
        Ok(Ok(Opening::Session {
            stream,
            buf,
            version,
            params,
        })) => (stream, buf, version, params),
        Ok(Ok(Opening::Cancel)) => return,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "startup failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "startup timed out");
            return;
        }
    };
    let services = proxy.services.clone();
    let opening = gate::Opening::new(
        services.clone(),
        gateway_core::config::Protocol::Postgres,
        peer.to_string(),
    );
    let session_id = opening.session_id().to_string();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let conn_name = param("database")
        .or_else(|| param("user"))
        .unwrap_or_default();

    // This gateway speaks protocol 3.0 and no protocol extensions: say so, as PostgreSQL
    // does, rather than let a newer client believe its requests took effect.
    let extensions: Vec<&str> = params
        .iter()
        .filter(|(k, _)| k.starts_with("_pq_."))
        .map(|(k, _)| k.as_str())
        .collect();
    if version != codec::PROTOCOL_3_0 || !extensions.is_empty() {
        let mut out = BytesMut::with_capacity(64);
        codec::put_negotiate_protocol_version(&mut out, codec::PROTOCOL_3_0, &extensions);
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
    // The token arrives where the client puts its password.
    let token =
        match tokio::time::timeout_at(deadline, front::read_token(&mut stream, &mut buf)).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "no token");
                return;
            }
            Err(_) => return,
        };
    let verified = services.verifier.verify_in_time(&token).await;
    let identity = match verified {
        Ok(id) => id,
        Err(e) => {
            opening.refused(&conn_name, None, &e.to_string()).await;
            front::fatal(&mut stream, "28P01", &format!("portcullis: {e}")).await;
            return;
        }
    };
    // Only Postgres connections: naming another protocol's connection is the same as naming
    // none.
    let admission = match opening.admit(&identity, &conn_name).await {
        Ok(a) => a,
        Err(e) => {
            let code = match e {
                gate::OpenRefusal::UnknownConnection(_) => "3D000",
                _ => "42501",
            };
            front::fatal(&mut stream, code, &format!("portcullis: {e}")).await;
            return;
        }
    };
    let conn = admission.conn.clone();

    let span = tracing::info_span!("session", session_id = %session_id, identity = %identity.principal(), connection = %conn.name);
    async move {
        let password = match conn.password(&services.config.base_dir) {
            Ok(p) => p,
            Err(e) => {
                front::fatal(
                    &mut stream,
                    "58000",
                    &format!("portcullis: connection credential unavailable: {e}"),
                )
                .await;
                return;
            }
        };
        let passthrough = front::passthrough_params(&params, &conn);
        let tls = match crate::target_tls::for_connection(&conn, &services.config.base_dir) {
            Ok(t) => t,
            Err(e) => {
                front::fatal(&mut stream, "58000", &format!("portcullis: {e}")).await;
                return;
            }
        };
        let target =
            match target::connect(&conn, tls.as_ref(), password.as_deref(), &passthrough).await {
                Ok(t) => t,
                Err(e) => {
                    services
                        .metrics
                        .protocol(gateway_core::config::Protocol::Postgres)
                        .target_errors_total
                        .fetch_add(1, Relaxed);
                    tracing::warn!(error = %e, "target login failed");
                    let code = if matches!(e, PgError::Gateway(_)) {
                        "58000"
                    } else {
                        "08006"
                    };
                    front::fatal(&mut stream, code, &format!("portcullis: {e}")).await;
                    return;
                }
            };

        // The session starts only once its start is on record.
        let groups = identity.groups.clone();
        let gate = match opening.start(identity, &admission, None).await {
            Ok(g) => g,
            Err(e) => {
                front::fatal(&mut stream, "58000", &format!("portcullis: {e}")).await;
                return;
            }
        };
        let active = &services
            .metrics
            .protocol(gateway_core::config::Protocol::Postgres)
            .sessions_active;

        let hold = Arc::new(HoldControl::default());
        let Some((pid, key)) = proxy.cancels.register(
            TargetKey {
                addr: conn.target.clone(),
                pid: target.pid,
                key: target.key.clone(),
                tls,
            },
            hold.clone(),
        ) else {
            front::fatal(
                &mut stream,
                "58000",
                "portcullis: no cancel key could be generated",
            )
            .await;
            active.fetch_sub(1, Relaxed);
            return;
        };
        let mut hello = BytesMut::with_capacity(512);
        codec::put_auth_ok(&mut hello);
        for (k, v) in &target.params {
            codec::put_parameter_status(&mut hello, k, v);
        }
        codec::put_backend_key_data(&mut hello, pid, &key);
        codec::put_ready_for_query(&mut hello, b'I');
        if stream.write_all(&hello).await.is_err() {
            proxy.cancels.remove(pid);
            active.fetch_sub(1, Relaxed);
            return;
        }
        tracing::info!("session opened");

        let masks = services
            .masking
            .as_ref()
            .and_then(|m| m.for_session(&conn.name, &groups));
        let ctx = SessionCtx {
            masks,
            gate,
            conn,
            services: services.clone(),
            max_message: proxy.max_message,
            hold,
        };
        let started = std::time::Instant::now();
        let outcome = relay::run(
            &ctx,
            stream,
            buf,
            target.stream,
            target.leftover,
            &target.params,
        )
        .await;

        proxy.cancels.remove(pid);
        services
            .metrics
            .protocol(gateway_core::config::Protocol::Postgres)
            .sessions_active
            .fetch_sub(1, Relaxed);
        let mut end = ctx.gate.end();
        end.duration_us = Some(started.elapsed().as_micros() as u64);
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
