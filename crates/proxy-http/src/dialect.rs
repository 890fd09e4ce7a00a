//! What differs between the APIs this front serves: how a request is described to policy,
//! how the gateway's own answers look, what the gateway adds to a request for the target,
//! how a response is masked, and which protocol upgrades may pass. [`HttpApi`] is the plain
//! HTTPS API dialect; `proxy-kube` supplies the Kubernetes one.

use std::sync::Arc;

use gateway_core::action::{Action, HttpKind, HttpRequest};
use gateway_core::config::{ConnectionConfig, Protocol};
use gateway_core::gate::Waiting;
use gateway_core::identity::Identity;
use gateway_core::masking::{MaskCounts, SessionMasks, TypeHint};
use hyper::{HeaderMap, Response, StatusCode};

use crate::body::Body;
use crate::respond;

/// A request as the dialect sees it, before any decision.
pub struct RequestView<'a> {
    /// Upper case.
    pub method: &'a str,
    /// The normalised path below the connection's prefix, decoded.
    pub decoded: &'a str,
    /// The same, encoded, as it is sent on.
    pub encoded: &'a str,
    /// The query as the client sent it.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub conn: &'a ConnectionConfig,
    /// The target's host name (`context.host`).
    pub host: &'a str,
}

/// A request described for policy and audit.
pub struct Described {
    pub action: Action,
    /// The command's text in audit.
    pub text: String,
    /// What an approval of it is bound to (besides its body).
    pub binding: String,
}

/// A request refused before policy sees it (malformed for the API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: StatusCode,
    /// Machine-readable reason.
    pub reason: &'static str,
    /// What the client reads.
    pub message: String,
}

impl Refused {
    pub fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Refused {
        Refused {
            status,
            reason,
            message: message.into(),
        }
    }
}

/// How a response is masked when the session has masking rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskMode {
    /// Passed as it is (a type masking does not read).
    Pass,
    /// Read whole (bounded), masked, sent.
    Whole(TypeHint),
    /// Masked line by line as it streams (a watch or a followed log).
    Lines(TypeHint),
    /// Must be masked and cannot be: the response is withheld with this reason.
    Withhold(String),
}

/// What an admitted request's preparation may read.
pub struct Prepare<'a> {
    pub identity: &'a Identity,
    pub conn: &'a ConnectionConfig,
    pub action: &'a Action,
    pub masked: bool,
}

/// Watches an upgraded connection's bytes both ways (to record them). Called in order, from
/// one task, before the bytes are passed on. `Err` means the tap cannot follow the stream:
/// the connection is closed rather than relayed unrecorded.
pub trait Tap: Send {
    /// Bytes the client sent.
    fn client(&mut self, data: &[u8]) -> Result<(), String>;
    /// Bytes the target sent.
    fn target(&mut self, data: &[u8]) -> Result<(), String>;
    /// The connection ended; what to add to the command's end event.
    fn finish(self: Box<Self>) -> serde_json::Value;
}

/// What the gateway does with one kind of API.
pub trait Dialect: Send + Sync + 'static {
    /// The protocol of the connections this front serves.
    fn protocol(&self) -> Protocol;

    /// The request as policy and audit see it, or why it is refused as malformed.
    fn describe(&self, req: &RequestView<'_>) -> Result<Described, Refused>;

    /// The gateway's own answer: `status`, a machine-readable `reason`, what the client reads.
    fn error(&self, status: StatusCode, reason: &str, message: &str) -> Response<Body>;

    /// 401 with the challenge a bearer client expects.
    fn unauthorized(&self, message: &str) -> Response<Body> {
        let mut resp = self.error(StatusCode::UNAUTHORIZED, "Unauthorized", message);
        resp.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer realm=\"portcullis\""),
        );
        resp
    }

    /// 403 for a request that needs approval `id`: sent again once it is approved, it runs
    /// once.
    fn approval_required(&self, id: &str, message: &str) -> Response<Body> {
        let mut resp = self.error(StatusCode::FORBIDDEN, "ApprovalRequired", message);
        if let Ok(v) = hyper::header::HeaderValue::from_str(id) {
            resp.headers_mut().insert(respond::APPROVAL_HEADER, v);
        }
        resp
    }

    /// How a request that needs approval waits: refused and retried, or held.
    fn waiting(&self) -> Waiting {
        Waiting::Retry
    }

    /// Headers for the target, after the engine removed the caller's credential and hop-by-hop
    /// headers and before the held credential is added.
    fn prepare(&self, _p: &Prepare<'_>, _headers: &mut HeaderMap) -> Result<(), String> {
        Ok(())
    }

    /// Whether the protocol upgrade `kind` (the `Upgrade` header) of a request for `action`
    /// may go through once admitted; `Err` says why not.
    fn upgrade_allowed(
        &self,
        _action: &Action,
        _kind: &str,
        _h: &HeaderMap,
    ) -> Result<(), Refused> {
        Err(Refused::new(
            StatusCode::NOT_IMPLEMENTED,
            "NotSupported",
            "protocol upgrades (WebSocket) are not supported on HTTP API connections",
        ))
    }

    /// What watches an admitted upgrade's bytes (to record them), if anything does. `Err`:
    /// it must be watched and cannot be (its recording cannot be created), so the upgrade is
    /// refused and the target's side closed.
    fn tap(
        &self,
        _action: &Action,
        _ctx: &UpgradeContext<'_>,
    ) -> Result<Option<Box<dyn Tap>>, String> {
        Ok(None)
    }

    /// How the response to `action` with headers `h` is masked in a masked session.
    fn mask_mode(&self, _action: &Action, h: &HeaderMap) -> MaskMode {
        crate::mask::hint(h).map_or(MaskMode::Pass, MaskMode::Whole)
    }

    /// Whether the successful JSON response to `action` must be rewritten for the client
    /// (it is read whole, bounded, first).
    fn rewrites(&self, _action: &Action) -> bool {
        false
    }

    /// Rewrite such a response: `prefix` is the path prefix the client reached the
    /// connection by (`/c/<name>`; empty when routed by host name).
    fn rewrite(&self, _action: &Action, _prefix: &str, _doc: &mut serde_json::Value) {}

    /// Whether a JSON response must be parsed to be masked even without JSON path rules.
    fn reads_documents(&self) -> bool {
        false
    }

    /// Mask a parsed JSON document in the dialect's own way, before path rules and detectors.
    fn mask_document(
        &self,
        _masks: &SessionMasks,
        _doc: &mut serde_json::Value,
        _counts: &mut MaskCounts,
    ) {
    }
}

/// What an upgrade's tap may know of its session.
pub struct UpgradeContext<'a> {
    pub identity: &'a Identity,
    pub connection: &'a str,
    pub state_dir: &'a std::path::Path,
    pub session_id: &'a str,
    pub number: u64,
    /// The protocol switched to (`websocket`, `SPDY/3.1`): the one the client asked for and
    /// policy admitted; a target answering with another is not relayed.
    pub upgrade: &'a str,
}

/// HTTPS APIs (Azure Resource Manager, Key Vault, Storage …): `http.read|write|delete` on
/// the method and normalised path; errors as `{"error": {"code", "message"}}`.
pub struct HttpApi;

impl Dialect for HttpApi {
    fn protocol(&self) -> Protocol {
        Protocol::Http
    }

    fn describe(&self, req: &RequestView<'_>) -> Result<Described, Refused> {
        let settings = req.conn.http.as_ref();
        let policy_path = if settings.is_some_and(|s| s.case_insensitive) {
            req.decoded.to_lowercase()
        } else {
            req.decoded.to_string()
        };
        let policy_query = match crate::path::normalise_query(req.query.unwrap_or("")) {
            Ok(q) => q,
            Err(e) => {
                let why = format!("the query: {e}");
                return Err(Refused::new(StatusCode::BAD_REQUEST, "InvalidQuery", why));
            }
        };
        let mut text = format!("{} {}", req.method, req.encoded);
        // What an approval is bound to: the request as policy read it (another spelling of
        // the same request is the same request).
        let mut binding = format!("{} {policy_path}", req.method);
        if let Some(q) = req.query {
            for s in [&mut text, &mut binding] {
                s.push('?');
                s.push_str(q);
            }
        }
        let action = Action::Http(Arc::new(HttpRequest {
            kind: HttpKind::of_method(req.method),
            method: req.method.to_string(),
            path: policy_path,
            host: req.host.to_string(),
            query: policy_query,
        }));
        Ok(Described {
            action,
            text,
            binding,
        })
    }

    fn error(&self, status: StatusCode, reason: &str, message: &str) -> Response<Body> {
        respond::error(status, reason, message)
    }
}
