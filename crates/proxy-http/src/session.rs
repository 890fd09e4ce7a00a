//! Sessions over one client connection. A session is one caller (token) on one connection
//! (target): opened through the gate on the first request that names them, reused by the
//! requests after it on the same client connection, ended (`session_end`) when the client
//! connection closes or the caller or connection changes.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use gateway_core::config::{ConnectionConfig, Protocol};
use gateway_core::gate::{OpenRefusal, Opening, SessionGate};
use gateway_core::masking::SessionMasks;
use gateway_core::services::Services;
use hyper::{Response, StatusCode};

use crate::body::Body;
use crate::server::HttpProxy;
use crate::upstream::Target;

/// One caller on one connection.
pub(crate) struct Session {
    token: String,
    pub conn: ConnectionConfig,
    pub gate: SessionGate,
    pub masks: Option<Arc<SessionMasks>>,
    pub target: Arc<Target>,
    services: Arc<Services>,
    protocol: Protocol,
    started: Instant,
}

impl Session {
    /// Stage the `command_end` of command `number` (started at `started`), with `error` if
    /// it failed and `detail`; it is written with the next journal write.
    pub fn record_end(
        &self,
        number: u64,
        started: Instant,
        error: Option<String>,
        detail: serde_json::Value,
    ) {
        let mut end = self.gate.complete(number);
        end.duration_us = Some(started.elapsed().as_micros() as u64);
        end.error = error;
        end.detail = Some(detail);
        if let Err(e) = self.services.audit.stage_later(end) {
            tracing::error!(error = %e, "a command's end could not be recorded");
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.services
            .metrics
            .protocol(self.protocol)
            .sessions_active
            .fetch_sub(1, Relaxed);
        let mut end = self.gate.end();
        end.duration_us = Some(self.started.elapsed().as_micros() as u64);
        end.detail = Some(serde_json::json!({ "commands": self.gate.commands() }));
        let audit = self.services.audit.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = audit.record_later(end).await;
            });
        }
    }
}

/// The sessions of one client connection.
pub(crate) struct ClientConn {
    pub peer: String,
    current: tokio::sync::Mutex<Option<Arc<Session>>>,
}

impl ClientConn {
    pub fn new(peer: String) -> ClientConn {
        ClientConn {
            peer,
            current: tokio::sync::Mutex::new(None),
        }
    }

    /// The session of `token` on connection `name`: the current one, or a new one opened
    /// through the gate. A refusal is the answer to send.
    pub async fn session(
        &self,
        proxy: &HttpProxy,
        token: &str,
        name: &str,
    ) -> Result<Arc<Session>, Response<Body>> {
        let mut current = self.current.lock().await;
        if let Some(s) = current.as_ref()
            && s.token == token
            && s.conn.name == name
        {
            return Ok(s.clone());
        }
        let s = Arc::new(self.open(proxy, token, name).await?);
        // The session this one replaces ends when its last request does.
        *current = Some(s.clone());
        Ok(s)
    }

    async fn open(
        &self,
        proxy: &HttpProxy,
        token: &str,
        name: &str,
    ) -> Result<Session, Response<Body>> {
        let services = &proxy.services;
        let d = &proxy.dialect;
        let protocol = d.protocol();
        let opening = Opening::new(services.clone(), protocol, self.peer.clone());
        let identity = match services.verifier.verify_in_time(token).await {
            Ok(i) => i,
            Err(e) => {
                opening.refused(name, None, &e.to_string()).await;
                return Err(d.unauthorized(&e.to_string()));
            }
        };
        let admission = match opening.admit(&identity, name).await {
            Ok(a) => a,
            Err(e @ OpenRefusal::UnknownConnection(_)) => {
                return Err(d.error(StatusCode::NOT_FOUND, "ConnectionNotFound", &e.to_string()));
            }
            Err(e @ OpenRefusal::Denied(_)) => {
                return Err(d.error(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    &format!("connect to {name} denied: {e}"),
                ));
            }
            Err(e @ OpenRefusal::Audit(_)) => {
                return Err(d.error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "AuditUnavailable",
                    &e.to_string(),
                ));
            }
        };
        let conn = admission.conn.clone();
        let target = match proxy.targets.get(&services.config, &conn) {
            Ok(t) => t,
            Err(e) => {
                let why = format!("the connection's target is misconfigured: {e}");
                opening.refused(name, Some(&identity), &why).await;
                return Err(d.error(StatusCode::BAD_GATEWAY, "TargetUnavailable", &why));
            }
        };
        let masks = services
            .masking
            .as_ref()
            .and_then(|m| m.for_session(&conn.name, &identity.groups));
        let detail = serde_json::json!({ "target": target.base });
        let gate = match opening.start(identity, &admission, Some(detail)).await {
            Ok(g) => g,
            Err(e) => {
                return Err(d.error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "AuditUnavailable",
                    &e.to_string(),
                ));
            }
        };
        Ok(Session {
            token: token.to_string(),
            conn,
            gate,
            masks,
            target,
            services: services.clone(),
            protocol,
            started: Instant::now(),
        })
    }
}
