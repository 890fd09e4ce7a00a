//! An admitted request on its way: to the target with the held credential instead of the
//! caller's, and back, streamed, or read whole and masked when masking applies to it. Its
//! `command_end` (status, bytes each way, duration, what was masked) is written when the
//! response body ends or the client leaves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_core::gate::Admitted;
use gateway_core::masking::MaskCounts;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};

use crate::body::{self, Body, Carried, Counted};
use crate::headers;
use crate::respond;
use crate::server::HttpProxy;
use crate::session::Session;

/// Longest wait for the target's response head.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default largest response body masked (read whole).
const MAX_MASKED_BODY: usize = 8 * 1024 * 1024;

/// Send `req` (admitted as `admitted`) to the session's target, and its answer back.
pub(crate) async fn forward(
    proxy: &HttpProxy,
    session: Arc<Session>,
    admitted: Admitted,
    mut req: Request<Body>,
    encoded_path: &str,
    query: Option<&str>,
    started: Instant,
) -> Response<Body> {
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
            return end_early(
                &session,
                number,
                started,
                StatusCode::BAD_REQUEST,
                &format!("the request's URI: {e}"),
            );
        }
    };
    *req.uri_mut() = uri;
    *req.version_mut() = hyper::Version::HTTP_11;
    let h = req.headers_mut();
    headers::for_target(h);
    h.insert(header::HOST, target.host.clone());
    if session.masks.is_some() {
        // Masking reads the body: ask for it uncompressed.
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
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
        return end_early(&session, number, started, StatusCode::BAD_GATEWAY, &why);
    }
    let resp = match tokio::time::timeout(RESPONSE_TIMEOUT, target.client.request(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let why = format!("the target failed: {}", error_chain(&e));
            return end_early(&session, number, started, StatusCode::BAD_GATEWAY, &why);
        }
        Err(_) => {
            let why = "the target did not answer in time".to_string();
            return end_early(&session, number, started, StatusCode::GATEWAY_TIMEOUT, &why);
        }
    };
    let (mut parts, incoming) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    let status = parts.status;
    let mut counts = MaskCounts::new();
    let out = match (&session.masks, crate::mask::hint(&parts.headers)) {
        (Some(masks), Some(hint)) => {
            // Asked for identity, a target may compress anyway: gzip and deflate are
            // decoded, anything else is withheld.
            let coding = match crate::coding::coding(&parts.headers) {
                Ok(c) => c,
                Err(e) => {
                    let why = format!("{e}; a body that must be masked is withheld");
                    return end_early(&session, number, started, StatusCode::BAD_GATEWAY, &why);
                }
            };
            let limit = session
                .conn
                .http
                .as_ref()
                .and_then(|h| h.max_masked_body)
                .unwrap_or(MAX_MASKED_BODY);
            let whole = match body::collect_bounded(incoming, limit)
                .await
                .map_err(|e| e.to_string())
                .and_then(|b| crate::coding::decode(coding, b, limit))
            {
                Ok(b) => b,
                Err(e) => {
                    let why = format!("the response must be masked and cannot be: {e}");
                    return end_early(&session, number, started, StatusCode::BAD_GATEWAY, &why);
                }
            };
            parts.headers.remove(header::CONTENT_ENCODING);
            let bytes = match crate::mask::mask_body(masks, hint, whole, &mut counts) {
                Ok(b) => b,
                Err(why) => {
                    return end_early(&session, number, started, StatusCode::BAD_GATEWAY, &why);
                }
            };
            parts.headers.remove(header::CONTENT_LENGTH);
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            body::full(bytes)
        }
        _ => body::boxed(incoming),
    };
    let masked = (!counts.is_empty()).then(|| {
        let names = session
            .masks
            .as_ref()
            .map(|m| m.column_rule_names().to_vec())
            .unwrap_or_default();
        serde_json::json!(counts.render(&names))
    });
    let session2 = session.clone();
    let done = move |carried: Carried| {
        let mut end = session2.gate.complete(number);
        end.duration_us = Some(started.elapsed().as_micros() as u64);
        end.detail = Some(serde_json::json!({
            "status": status.as_u16(),
            "response_bytes": carried.bytes,
            "complete": carried.complete,
            "masked": masked,
        }));
        if !carried.complete {
            end.error = Some("the response was cut off".into());
        }
        let audit = session2.services().audit.clone();
        tokio::spawn(async move {
            let _ = audit.record_later(end).await;
        });
    };
    Response::from_parts(parts, body::boxed(Counted::new(out, done)))
}

/// Answer with an error of the gateway's and record the command's end with it.
fn end_early(
    session: &Session,
    number: u64,
    started: Instant,
    status: StatusCode,
    why: &str,
) -> Response<Body> {
    let mut end = session.gate.complete(number);
    end.duration_us = Some(started.elapsed().as_micros() as u64);
    end.error = Some(why.to_string());
    end.detail = Some(serde_json::json!({ "status": status.as_u16() }));
    let audit = session.services().audit.clone();
    tokio::spawn(async move {
        let _ = audit.record_later(end).await;
    });
    let code = if status == StatusCode::GATEWAY_TIMEOUT {
        "TargetTimeout"
    } else {
        "TargetError"
    };
    respond::error(status, code, why)
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
