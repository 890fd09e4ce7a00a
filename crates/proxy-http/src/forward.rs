//! An admitted request on its way: to the target with the held credential instead of the
//! caller's, and back, streamed, or read whole and masked when masking applies to it. Its
//! `command_end` (status, bytes each way, duration, what was masked) is written when the
//! response body ends or the client leaves.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gateway_core::gate::Admitted;
use gateway_core::masking::{MaskCounts, SessionMasks, TypeHint};
use hyper::header::{self, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode, Uri};

use crate::body::{self, Body, Carried, Counted};
use crate::dialect::{MaskMode, Prepare};
use crate::exchange::Exchange;
use crate::headers;
use crate::lines::MaskedLines;
use crate::server::HttpProxy;
use crate::session::Session;

/// Longest wait for the target's response head.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default largest response body masked (read whole).
const MAX_MASKED_BODY: usize = 8 * 1024 * 1024;

/// What the handler read of an admitted request, beyond the request itself.
pub(crate) struct Sent<'a> {
    pub action: gateway_core::action::Action,
    pub encoded_path: &'a str,
    /// The path prefix the client reached the connection by.
    pub prefix: &'a str,
    pub query: Option<&'a str>,
    /// The protocol upgrade asked for, and the client side of it.
    pub upgrade: Option<(&'a str, OnUpgrade)>,
    pub started: Instant,
    /// The exchange's recording, when the connection records exchanges.
    pub exchange: Option<Exchange>,
}

/// Send `req` (admitted as `admitted`) to the session's target, and its answer back.
pub(crate) async fn forward(
    proxy: &HttpProxy,
    session: Arc<Session>,
    admitted: Admitted,
    req: Request<Body>,
    sent: Sent<'_>,
) -> Response<Body> {
    // A client that leaves before the response head drops this future mid-way: the guard
    // still writes the command's end. Once a response exists, its body (or the upgrade, or
    // the early answer) writes it.
    let guard = Unanswered {
        session: Some(session.clone()),
        number: admitted.number(),
        started: sent.started,
    };
    let resp = send(proxy, session, admitted, req, sent).await;
    guard.answered();
    resp
}

/// The end of a command no response was made for yet.
struct Unanswered {
    session: Option<Arc<Session>>,
    number: u64,
    started: Instant,
}

impl Unanswered {
    fn answered(mut self) {
        self.session = None;
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let why = "the client left before the response".to_string();
            let detail = serde_json::json!({ "complete": false });
            session.record_end(self.number, self.started, Some(why), detail);
        }
    }
}

async fn send(
    proxy: &HttpProxy,
    session: Arc<Session>,
    admitted: Admitted,
    mut req: Request<Body>,
    sent: Sent<'_>,
) -> Response<Body> {
    let Sent {
        action,
        encoded_path,
        prefix,
        query,
        upgrade,
        started,
        exchange,
    } = sent;
    let d = &proxy.dialect;
    let number = admitted.number();
    let target = session.target.clone();
    let mut uri = String::with_capacity(target.base.len() + encoded_path.len() + 64);
    uri.push_str(&target.base);
    uri.push_str(encoded_path);
    if let Some(q) = query {
        uri.push('?');
        uri.push_str(q);
    }
    let uri: Uri = match uri.parse() {
        Ok(u) => u,
        Err(e) => {
            let why = format!("the request's URI: {e}");
            return end_early(
                proxy,
                &session,
                number,
                started,
                StatusCode::BAD_REQUEST,
                &why,
            );
        }
    };
    *req.uri_mut() = uri;
    *req.version_mut() = hyper::Version::HTTP_11;
    let h = req.headers_mut();
    headers::for_target(h);
    h.insert(header::HOST, target.host.clone());
    if let Some((kind, _)) = &upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(v) = HeaderValue::from_str(kind) {
            h.insert(header::UPGRADE, v);
        }
    }
    if session.masks.is_some() {
        // Masking reads the body: ask for it uncompressed.
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
    let prepare = Prepare {
        identity: session.gate.identity(),
        conn: &session.conn,
        action: &action,
        masked: session.masks.is_some(),
    };
    if let Err(why) = d.prepare(&prepare, req.headers_mut()) {
        return end_early(
            proxy,
            &session,
            number,
            started,
            StatusCode::FORBIDDEN,
            &why,
        );
    }
    let method = req.method().as_str().to_string();
    let held = proxy
        .held
        .apply(
            &proxy.services.config,
            &session.conn,
            &method,
            req.headers_mut(),
            encoded_path,
            query,
        )
        .await;
    if let Err(e) = held {
        let why = format!("the connection's credential is unavailable: {e}");
        return end_early(
            proxy,
            &session,
            number,
            started,
            StatusCode::BAD_GATEWAY,
            &why,
        );
    }
    let resp = match tokio::time::timeout(RESPONSE_TIMEOUT, target.client.request(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let why = format!("the target failed: {}", error_chain(&e));
            return end_early(
                proxy,
                &session,
                number,
                started,
                StatusCode::BAD_GATEWAY,
                &why,
            );
        }
        Err(_) => {
            let why = "the target did not answer in time".to_string();
            let code = StatusCode::GATEWAY_TIMEOUT;
            return end_early(proxy, &session, number, started, code, &why);
        }
    };
    if let Some((asked, client)) = upgrade
        && resp.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        let up = crate::upgrade::Switch {
            action: &action,
            number,
            started,
            asked,
            client,
        };
        return crate::upgrade::switch(proxy, session, up, resp);
    }
    let (mut parts, incoming) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    let status = parts.status;
    let counts = Arc::new(Mutex::new(MaskCounts::new()));
    let shaped = Shape {
        dialect: d,
        session: &session,
        action: &action,
        prefix,
        counts: &counts,
    };
    let out = match shaped.body(&mut parts, incoming).await {
        Ok(b) => b,
        Err(why) => {
            let code = StatusCode::BAD_GATEWAY;
            return end_early(proxy, &session, number, started, code, &why);
        }
    };
    let (out, exchange) = match exchange {
        Some(mut x) => (x.response(&parts.headers, out), Some(x)),
        None => (out, None),
    };
    let done = finish(session, number, started, status, counts, exchange);
    Response::from_parts(parts, body::boxed(Counted::new(out, done)))
}

/// What shapes a response's body for the client: rewritten where the dialect rewrites it,
/// masked as the dialect says for a masked session, else passed as it streams.
struct Shape<'a> {
    dialect: &'a Arc<dyn crate::dialect::Dialect>,
    session: &'a Session,
    action: &'a gateway_core::action::Action,
    prefix: &'a str,
    counts: &'a Arc<Mutex<MaskCounts>>,
}

impl Shape<'_> {
    /// The body to send; `Err` is why the response is withheld.
    async fn body(
        &self,
        parts: &mut hyper::http::response::Parts,
        incoming: hyper::body::Incoming,
    ) -> Result<Body, String> {
        let mode = match &self.session.masks {
            None => MaskMode::Pass,
            Some(_) => self.dialect.mask_mode(self.action, &parts.headers),
        };
        let limit = masked_limit(self.session);
        if parts.status.is_success() && self.dialect.rewrites(self.action) {
            let bytes = rewrite(
                self.dialect.as_ref(),
                self.action,
                self.prefix,
                parts,
                incoming,
                limit,
            )
            .await?;
            let bytes = match (&self.session.masks, mode) {
                (_, MaskMode::Withhold(why)) => return Err(why),
                (Some(masks), MaskMode::Whole(hint) | MaskMode::Lines(hint)) => {
                    let mut n = MaskCounts::new();
                    let b = crate::mask::mask_body(
                        masks,
                        hint,
                        bytes,
                        &mut n,
                        Some(self.dialect.as_ref()),
                    )?;
                    self.count(&n);
                    b
                }
                _ => bytes,
            };
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            return Ok(body::full(bytes));
        }
        let Some(masks) = &self.session.masks else {
            return Ok(body::boxed(incoming));
        };
        match mode {
            MaskMode::Pass => Ok(body::boxed(incoming)),
            MaskMode::Withhold(why) => Err(why),
            MaskMode::Lines(hint) => {
                if parts.headers.contains_key(header::CONTENT_ENCODING) {
                    return Err(
                        "a streamed response that must be masked arrived compressed; \
                                it is withheld"
                            .into(),
                    );
                }
                parts.headers.remove(header::CONTENT_LENGTH);
                Ok(body::boxed(MaskedLines::new(
                    body::boxed(incoming),
                    hint,
                    limit,
                    masks.clone(),
                    self.dialect.clone(),
                    self.counts.clone(),
                )))
            }
            MaskMode::Whole(hint) => {
                let (bytes, n) =
                    mask_whole(self.dialect.as_ref(), masks, hint, parts, incoming, limit).await?;
                self.count(&n);
                Ok(body::full(bytes))
            }
        }
    }

    fn count(&self, n: &MaskCounts) {
        if let Ok(mut c) = self.counts.lock() {
            c.merge(n);
        }
    }
}

/// What writes a forwarded request's `command_end` once its response body is done.
fn finish(
    session2: Arc<Session>,
    number: u64,
    started: Instant,
    status: StatusCode,
    counts: Arc<Mutex<MaskCounts>>,
    exchange: Option<Exchange>,
) -> impl FnOnce(Carried) + Send + Sync + Unpin + 'static {
    move |carried: Carried| {
        let counts = counts.lock().map(|c| c.clone()).unwrap_or_default();
        let masked = (!counts.is_empty()).then(|| {
            let names = session2
                .masks
                .as_ref()
                .map(|m| m.column_rule_names().to_vec())
                .unwrap_or_default();
            serde_json::json!(counts.render(&names))
        });
        let mut detail = serde_json::json!({
            "status": status.as_u16(),
            "response_bytes": carried.bytes,
            "complete": carried.complete,
            "masked": masked,
        });
        if let Some(x) = exchange {
            detail["exchange"] = x.finish();
        }
        let error = (!carried.complete).then(|| "the response was cut off".to_string());
        session2.record_end(number, started, error, detail);
    }
}

/// Read a response whole (bounded, decoded), parse it as JSON and let the dialect rewrite
/// it for the client.
async fn rewrite(
    d: &dyn crate::dialect::Dialect,
    action: &gateway_core::action::Action,
    prefix: &str,
    parts: &mut hyper::http::response::Parts,
    incoming: hyper::body::Incoming,
    limit: usize,
) -> Result<bytes::Bytes, String> {
    let whole = read_whole(parts, incoming, limit, "rewritten").await?;
    let mut doc: serde_json::Value = serde_json::from_slice(&whole)
        .map_err(|e| format!("the response is not JSON ({e}); it is withheld"))?;
    d.rewrite(action, prefix, &mut doc);
    serde_json::to_vec(&doc)
        .map(bytes::Bytes::from)
        .map_err(|e| e.to_string())
}

/// Largest response (or streamed line) masked for `session`.
fn masked_limit(session: &Session) -> usize {
    let http = session.conn.http.as_ref().and_then(|h| h.max_masked_body);
    let kube = session.conn.kube.as_ref().and_then(|k| k.max_masked_body);
    http.or(kube).unwrap_or(MAX_MASKED_BODY)
}

/// Read a response body whole, at most `limit` bytes, decoded (asked for identity, a
/// target may compress anyway: gzip and deflate are decoded, anything else is withheld);
/// its `Content-Encoding` and `Content-Length` go. `what` says why it is read: `masked`,
/// `rewritten`.
async fn read_whole(
    parts: &mut hyper::http::response::Parts,
    incoming: hyper::body::Incoming,
    limit: usize,
    what: &str,
) -> Result<bytes::Bytes, String> {
    let coding = crate::coding::coding(&parts.headers)
        .map_err(|e| format!("{e}; a body that must be {what} is withheld"))?;
    let whole = body::collect_bounded(incoming, limit)
        .await
        .map_err(|e| e.to_string())
        .and_then(|b| crate::coding::decode(coding, b, limit))
        .map_err(|e| format!("the response must be {what} and cannot be: {e}"))?;
    parts.headers.remove(header::CONTENT_ENCODING);
    parts.headers.remove(header::CONTENT_LENGTH);
    Ok(whole)
}

/// Read a response whole (bounded by `limit`, decoded) and mask it; the masked body and
/// what fired.
async fn mask_whole(
    d: &dyn crate::dialect::Dialect,
    masks: &SessionMasks,
    hint: TypeHint,
    parts: &mut hyper::http::response::Parts,
    incoming: hyper::body::Incoming,
    limit: usize,
) -> Result<(bytes::Bytes, MaskCounts), String> {
    let whole = read_whole(parts, incoming, limit, "masked").await?;
    let mut counts = MaskCounts::new();
    let bytes = crate::mask::mask_body(masks, hint, whole, &mut counts, Some(d))?;
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    Ok((bytes, counts))
}

/// Answer with an error of the gateway's and record the command's end with it.
pub(crate) fn end_early(
    proxy: &HttpProxy,
    session: &Session,
    number: u64,
    started: Instant,
    status: StatusCode,
    why: &str,
) -> Response<Body> {
    let detail = serde_json::json!({ "status": status.as_u16() });
    session.record_end(number, started, Some(why.to_string()), detail);
    let code = if status == StatusCode::GATEWAY_TIMEOUT {
        "TargetTimeout"
    } else {
        "TargetError"
    };
    proxy.dialect.error(status, code, why)
}

/// An error and its sources, one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}
