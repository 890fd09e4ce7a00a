//! One request, from the client's head to the gate: the caller's token, the normalised
//! path, the connection it names, the decision. Only an admitted request goes on
//! ([`crate::forward`]); nothing of a refused one (not even its body) is read or sent.

use gateway_core::gate::{Batch, Command, Gated, Staged};
use gateway_core::policy::Verdict;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use crate::body::{self, Body};
use crate::dialect::{Described, RequestView};
use crate::exchange::{Exchange, Recording};
use crate::forward;
use crate::path;
use crate::route;
use crate::server::HttpProxy;
use crate::session::ClientConn;

/// Default largest request body read to bind an approval to it.
const MAX_REVIEW_BODY: usize = 1024 * 1024;

/// Answer one request.
pub(crate) async fn handle(
    proxy: &HttpProxy,
    client: &ClientConn,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let d = &proxy.dialect;
    if req.method() == Method::CONNECT {
        return d.error(
            StatusCode::NOT_IMPLEMENTED,
            "NotSupported",
            "CONNECT is not supported",
        );
    }
    let upgrade = req
        .headers()
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let Some(token) = crate::headers::bearer(req.headers()) else {
        return d.unauthorized("send `Authorization: Bearer <token>`");
    };
    let token = token.to_string();
    let norm = match path::normalise(req.uri().path()) {
        Ok(n) => n,
        Err(e) => return d.error(StatusCode::BAD_REQUEST, "InvalidPath", &e.to_string()),
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
    let Some(r) = route::route(cfg, d.protocol(), &host, &norm.decoded, &norm.encoded) else {
        return d.error(
            StatusCode::NOT_FOUND,
            "ConnectionNotFound",
            "name a connection with the path prefix /c/<connection>/",
        );
    };
    let session = match client.session(proxy, &token, r.connection).await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    // Methods are case-sensitive on the wire; policy sees them upper-cased, so a rule on
    // `context.method` cannot be dodged by `delete`.
    let method = req.method().as_str().to_ascii_uppercase();
    let query = req.uri().query().map(str::to_string);
    let described = d.describe(&RequestView {
        method: &method,
        decoded: r.decoded,
        encoded: r.encoded,
        query: query.as_deref(),
        headers: req.headers(),
        conn: &session.conn,
        host: &session.target.host_name,
    });
    let Described {
        action,
        text,
        binding,
    } = match described {
        Ok(x) => x,
        Err(r) => return d.error(r.status, r.reason, &r.message),
    };
    if let Some(kind) = &upgrade
        && let Err(r) = d.upgrade_allowed(&action, kind, req.headers())
    {
        return d.error(r.status, r.reason, &r.message);
    }
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let mut cmd = Command::new(action.clone(), text);
    cmd.fingerprint = Some(gateway_core::approvals::fingerprint(&binding, &[]));
    cmd.waiting = d.waiting();
    let encoded = r.encoded.to_string();
    let prefix = norm.encoded[..norm.encoded.len() - r.encoded.len()].to_string();
    let (parts, incoming) = req.into_parts();
    let mut body = body::boxed(incoming);
    // A request that needs approval is bound to its body too: the approved request, not
    // another with the same method and path, is the one that runs.
    // Decided once; staged and committed here as `SessionGate::admit` would, so the body can
    // be bound in between.
    let decision = session.gate.decide(&cmd.actions);
    if matches!(decision.verdict, Verdict::Review { .. }) {
        let limit = session
            .conn
            .http
            .as_ref()
            .and_then(|s| s.max_review_body)
            .unwrap_or(MAX_REVIEW_BODY);
        let bytes = match body::collect_bounded(body, limit).await {
            Ok(b) => b,
            Err(e) => {
                return d.error(
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
    let admitted = match gated {
        Gated::Forward(admitted) => admitted,
        Gated::Refuse(r) => {
            return match &r.approval {
                Some(id) if !r.reason.starts_with("approval") => {
                    d.approval_required(id, &r.message)
                }
                _ => d.error(StatusCode::FORBIDDEN, "Forbidden", &r.message),
            };
        }
        Gated::Hold(held) => {
            // Parked until people decide; the client waits on its open request. A client
            // that leaves withdraws it.
            let id = held.request.id.clone();
            let mut guard = Withdraw {
                session: session.clone(),
                held: Some(held),
            };
            let outcome = proxy.services.approvals.wait(&id).await;
            let Some(held) = guard.held.take() else {
                return d.error(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    "the request was withdrawn",
                );
            };
            match session.gate.resolve(held, &outcome).await {
                Ok(admitted) => admitted,
                Err(r) => return d.error(StatusCode::FORBIDDEN, "Forbidden", &r.message),
            }
        }
    };
    // The exchange's recording starts from the request as the client sent it.
    let (exchange, body) = match Recording::of(&session.conn) {
        Some(rec) => {
            let masks = session.masks.clone();
            let (x, b) = Exchange::request(rec, masks, d.clone(), &parts.headers, body);
            (Some(x), b)
        }
        None => (None, body),
    };
    let req = Request::from_parts(parts, body.map_err(Into::into).boxed());
    let sent = forward::Sent {
        action,
        encoded_path: &encoded,
        prefix: &prefix,
        query: query.as_deref(),
        upgrade: upgrade.as_deref().zip(client_upgrade),
        started,
        exchange,
    };
    forward::forward(proxy, session, admitted, req, sent).await
}

/// A held request's approval, withdrawn if the client leaves before it is decided.
struct Withdraw {
    session: std::sync::Arc<crate::session::Session>,
    held: Option<Box<gateway_core::gate::Held>>,
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        if let Some(held) = self.held.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let session = self.session.clone();
            rt.spawn(async move {
                let _ = session
                    .gate
                    .withdraw(held, "the client left while the request was held")
                    .await;
            });
        }
    }
}
