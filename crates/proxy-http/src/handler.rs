//! One request, from the client's head to the gate: the caller's token, the normalised
//! path, the connection it names, the decision. Only an admitted request goes on
//! ([`crate::forward`]); nothing of a refused one (not even its body) is read or sent.

use std::sync::Arc;

use gateway_core::action::{Action, HttpKind, HttpRequest};
use gateway_core::gate::{Batch, Command, Gated, Staged, Waiting};
use gateway_core::policy::Verdict;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use crate::body::{self, Body};
use crate::forward;
use crate::path;
use crate::respond;
use crate::route;
use crate::server::HttpProxy;
use crate::session::ClientConn;

/// Default largest request body read to bind an approval to it.
const MAX_REVIEW_BODY: usize = 1024 * 1024;

/// Answer one request.
pub(crate) async fn handle(
    proxy: &HttpProxy,
    client: &ClientConn,
    req: Request<Incoming>,
) -> Response<Body> {
    if req.method() == Method::CONNECT || req.headers().contains_key(hyper::header::UPGRADE) {
        return respond::error(
            StatusCode::NOT_IMPLEMENTED,
            "NotSupported",
            "CONNECT and protocol upgrades (WebSocket) are not supported",
        );
    }
    let Some(token) = crate::headers::bearer(req.headers()) else {
        return respond::unauthorized("send `Authorization: Bearer <token>`");
    };
    let token = token.to_string();
    let norm = match path::normalise(req.uri().path()) {
        Ok(n) => n,
        Err(e) => return respond::error(StatusCode::BAD_REQUEST, "InvalidPath", &e.to_string()),
    };
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            req.headers()
                .get(hyper::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .map(route::host_name)
        .unwrap_or_default();
    let cfg = &proxy.services.config;
    let Some(r) = route::route(cfg, &host, &norm.decoded, &norm.encoded) else {
        return respond::error(
            StatusCode::NOT_FOUND,
            "ConnectionNotFound",
            "name a connection with the path prefix /c/<connection>/",
        );
    };
    let session = match client.session(proxy, &token, r.connection).await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let settings = session.conn.http.as_ref();
    let policy_path = if settings.is_some_and(|s| s.case_insensitive) {
        r.decoded.to_lowercase()
    } else {
        r.decoded.to_string()
    };
    // Methods are case-sensitive on the wire; policy sees them upper-cased, so a rule on
    // `context.method` cannot be dodged by `delete`.
    let method = req.method().as_str().to_ascii_uppercase();
    let query = req.uri().query().map(str::to_string);
    let policy_query = match path::normalise_query(query.as_deref().unwrap_or("")) {
        Ok(q) => q,
        Err(e) => {
            let why = format!("the query: {e}");
            return respond::error(StatusCode::BAD_REQUEST, "InvalidQuery", &why);
        }
    };
    let mut text = format!("{method} {}", r.encoded);
    if let Some(q) = &query {
        text.push('?');
        text.push_str(q);
    }
    // What an approval is bound to: the request as policy read it (another spelling of the
    // same request is the same request), and its body when it has one (below).
    let mut binding = format!("{method} {policy_path}");
    if let Some(q) = &query {
        binding.push('?');
        binding.push_str(q);
    }
    let action = Action::Http(Arc::new(HttpRequest {
        kind: HttpKind::of_method(&method),
        method,
        path: policy_path,
        host: session.target.host_name.clone(),
        query: policy_query,
    }));
    let mut cmd = Command::new(action, text);
    cmd.fingerprint = Some(gateway_core::approvals::fingerprint(&binding, &[]));
    cmd.waiting = Waiting::Retry;
    let encoded = r.encoded.to_string();
    let (parts, incoming) = req.into_parts();
    let mut body = body::boxed(incoming);
    // A request that needs approval is bound to its body too: the approved request, not
    // another with the same method and path, is the one that runs.
    // Decided once; staged and committed here as `SessionGate::admit` would, so the body can
    // be bound in between.
    let decision = session.gate.decide(&cmd.actions);
    if matches!(decision.verdict, Verdict::Review { .. }) {
        let limit = settings
            .and_then(|s| s.max_review_body)
            .unwrap_or(MAX_REVIEW_BODY);
        let bytes = match body::collect_bounded(body, limit).await {
            Ok(b) => b,
            Err(e) => {
                return respond::error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "BodyTooLarge",
                    &format!("a request that needs approval is read whole first: {e}"),
                );
            }
        };
        cmd.fingerprint = Some(gateway_core::approvals::fingerprint(
            &binding,
            &[Some(&bytes)],
        ));
        body = body::full(bytes);
    }
    let started = std::time::Instant::now();
    let gate = &session.gate;
    let mut batch = Batch::default();
    let gated = match gate.stage(cmd, &decision, &mut batch) {
        Staged::Forward(pending) => match gate.commit(&mut batch) {
            Ok(on_record) => Gated::Forward(pending.admit(&on_record)),
            Err(reason) => Gated::Refuse(pending.unrecorded(reason)),
        },
        Staged::Refuse(refusal) => {
            // Refused either way; a failure to record it is counted and logged by the gate.
            let _ = gate.commit(&mut batch);
            Gated::Refuse(refusal)
        }
        Staged::Review(review) => gate.hold(review).await,
    };
    match gated {
        Gated::Forward(admitted) => {
            let req = Request::from_parts(parts, body.map_err(Into::into).boxed());
            forward::forward(
                proxy,
                session,
                admitted,
                req,
                &encoded,
                query.as_deref(),
                started,
            )
            .await
        }
        Gated::Refuse(r) => match &r.approval {
            Some(id) if !r.reason.starts_with("approval") => {
                respond::approval_required(id, &r.message)
            }
            _ => respond::error(StatusCode::FORBIDDEN, "Forbidden", &r.message),
        },
        Gated::Hold(held) => {
            // Requests wait by retrying, so the gate does not park them; should one be
            // held, it is withdrawn rather than left waiting with no one to answer.
            let r = session
                .gate
                .withdraw(held, "HTTP requests do not wait")
                .await;
            respond::error(StatusCode::FORBIDDEN, "Forbidden", &r.message)
        }
    }
}
