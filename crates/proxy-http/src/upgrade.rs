//! A protocol upgrade the target accepted (`101 Switching Protocols`: a WebSocket, say):
//! the client is told the same, and once both sides have switched, bytes are relayed both
//! ways as they come, each shown to the dialect's tap (which may record them). The
//! command's end is written when either side closes.

use std::sync::Arc;
use std::time::Instant;

use gateway_core::action::Action;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::body::{self, Body};
use crate::dialect::{Tap, UpgradeContext};
use crate::server::HttpProxy;
use crate::session::Session;

/// Read buffer each way.
const BUF: usize = 16 * 1024;

/// An admitted request whose target switched protocols.
pub(crate) struct Switch<'a> {
    pub action: &'a Action,
    pub number: u64,
    pub started: Instant,
    /// The protocol the client asked to switch to (and policy admitted).
    pub asked: &'a str,
    /// The client's side of the upgrade.
    pub client: OnUpgrade,
}

/// Answer `101` to the client and relay the two upgraded connections.
pub(crate) fn switch(
    proxy: &HttpProxy,
    session: Arc<Session>,
    up: Switch<'_>,
    mut resp: Response<Incoming>,
) -> Response<Body> {
    let state_dir = proxy.services.config.state_dir();
    let kind = resp.headers().get(header::UPGRADE).cloned();
    // The stream is read (and recorded) as the protocol that was admitted: a target that
    // switches to another one is not relayed.
    let same = kind
        .as_ref()
        .and_then(|k| k.to_str().ok())
        .is_some_and(|k| k.trim().eq_ignore_ascii_case(up.asked));
    if !same {
        let why = format!(
            "the target switched to {:?}, not to the `{}` that was asked for",
            kind.as_ref()
                .map(|k| String::from_utf8_lossy(k.as_bytes()).into_owned()),
            up.asked
        );
        let code = StatusCode::BAD_GATEWAY;
        return crate::forward::end_early(proxy, &session, up.number, up.started, code, &why);
    }
    let tap = proxy.dialect.tap(
        up.action,
        &UpgradeContext {
            identity: session.gate.identity(),
            connection: &session.conn.name,
            state_dir: &state_dir,
            session_id: session.gate.session_id(),
            number: up.number,
            upgrade: up.asked,
        },
    );
    let tap = match tap {
        Ok(t) => t,
        Err(why) => {
            // Fail closed: the client never gets the stream; dropping the target's response
            // closes its side.
            let why = format!("the session cannot be recorded: {why}");
            let code = StatusCode::SERVICE_UNAVAILABLE;
            return crate::forward::end_early(proxy, &session, up.number, up.started, code, &why);
        }
    };
    let target = hyper::upgrade::on(&mut resp);
    let mut headers = resp.headers().clone();
    crate::headers::strip_hop_by_hop(&mut headers);
    let mut out = Response::new(body::full(bytes::Bytes::new()));
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *out.headers_mut() = headers;
    out.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Some(k) = kind {
        out.headers_mut().insert(header::UPGRADE, k);
    }
    let (number, started, client) = (up.number, up.started, up.client);
    tokio::spawn(async move {
        let relayed = match (client.await, target.await) {
            (Ok(c), Ok(t)) => relay(TokioIo::new(c), TokioIo::new(t), tap).await,
            (Err(e), _) | (_, Err(e)) => Relayed {
                error: Some(format!("the upgrade failed: {e}")),
                detail: tap.map(|t| t.finish()),
                ..Relayed::default()
            },
        };
        let mut detail = serde_json::json!({
            "status": 101,
            "client_bytes": relayed.from_client,
            "response_bytes": relayed.from_target,
        });
        if let (Some(obj), Some(serde_json::Value::Object(extra))) =
            (detail.as_object_mut(), relayed.detail)
        {
            obj.extend(extra);
        }
        session.record_end(number, started, relayed.error, detail);
    });
    out
}

#[derive(Default)]
struct Relayed {
    from_client: u64,
    from_target: u64,
    error: Option<String>,
    detail: Option<serde_json::Value>,
}

/// Copy both ways until either side closes; the tap sees every chunk in order, before it is
/// passed on, and a chunk it cannot follow ends the relay.
async fn relay<C, T>(mut c: C, mut t: T, mut tap: Option<Box<dyn Tap>>) -> Relayed
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut r = Relayed::default();
    let mut cbuf = vec![0u8; BUF];
    let mut tbuf = vec![0u8; BUF];
    loop {
        tokio::select! {
            n = c.read(&mut cbuf) => match n {
                Ok(0) => break,
                Ok(n) => {
                    if let Some(Err(e)) = tap.as_mut().map(|tap| tap.client(&cbuf[..n])) {
                        r.error = Some(format!("the recording cannot follow the client: {e}"));
                        break;
                    }
                    r.from_client += n as u64;
                    if let Err(e) = t.write_all(&cbuf[..n]).await {
                        r.error = Some(format!("writing to the target: {e}"));
                        break;
                    }
                }
                Err(e) => {
                    r.error = Some(format!("reading from the client: {e}"));
                    break;
                }
            },
            n = t.read(&mut tbuf) => match n {
                Ok(0) => break,
                Ok(n) => {
                    if let Some(Err(e)) = tap.as_mut().map(|tap| tap.target(&tbuf[..n])) {
                        r.error = Some(format!("the recording cannot follow the target: {e}"));
                        break;
                    }
                    r.from_target += n as u64;
                    if let Err(e) = c.write_all(&tbuf[..n]).await {
                        r.error = Some(format!("writing to the client: {e}"));
                        break;
                    }
                }
                Err(e) => {
                    r.error = Some(format!("reading from the target: {e}"));
                    break;
                }
            },
        }
    }
    let _ = c.shutdown().await;
    let _ = t.shutdown().await;
    r.detail = tap.map(|t| t.finish());
    r
}
