//! The Kubernetes API as the HTTP front serves it: each request described by its request
//! info ([`crate::info`]) as `kube.<verb>`, the gateway's answers as `Status` objects,
//! requests that need approval held open until people decide (kubectl waits), the caller's
//! own impersonation refused and the gateway's added when the connection says so, Secrets
//! masked in every JSON shape the API returns them in (watch events line by line), and
//! exec/attach WebSocket streams recorded.

use std::sync::Arc;

use gateway_core::action::{Action, KubeVerb};
use gateway_core::config::Protocol;
use gateway_core::gate::Waiting;
use gateway_core::masking::{MaskCounts, SessionMasks, TypeHint};
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{HeaderMap, Response, StatusCode};
use proxy_http::body::Body;
use proxy_http::dialect::{
    Described, Dialect, MaskMode, Prepare, Refused, RequestView, Tap, UpgradeContext,
};

use crate::info::{InfoError, request_info};
use crate::record::ExecTap;
use crate::status::status;

/// The OpenAPI v3 index, whose links are server-relative.
const OPENAPI_V3: &str = "/openapi/v3";

/// The exec/attach stream protocols (WebSocket subprotocols, SPDY X-Stream-Protocol-Version)
/// whose channels the recorder reads.
const BINARY_CHANNELS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// Headers that ask the API server to act as someone else.
const IMPERSONATE_PREFIX: &str = "impersonate-";

/// The Kubernetes dialect.
pub struct KubeApi;

impl Dialect for KubeApi {
    fn protocol(&self) -> Protocol {
        Protocol::Kube
    }

    fn describe(&self, req: &RequestView<'_>) -> Result<Described, Refused> {
        // Go's query parsing drops a parameter holding `;`, so the API server would read
        // other parameters than policy did: refused.
        if req.query.is_some_and(|q| q.contains(';')) {
            return Err(Refused::new(
                StatusCode::BAD_REQUEST,
                "InvalidQuery",
                "a query holding `;` is read differently by the API server; it is refused",
            ));
        }
        let query = proxy_http::path::query_pairs(req.query.unwrap_or(""))
            .map_err(|e| Refused::new(StatusCode::BAD_REQUEST, "InvalidQuery", e.to_string()))?;
        let info = request_info(req.method, req.decoded, &query).map_err(|e| {
            let code = match e {
                InfoError::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
                _ => StatusCode::BAD_REQUEST,
            };
            Refused::new(code, "InvalidRequest", e.to_string())
        })?;
        // The caller cannot choose whom the gateway acts as. Discovery (a non-resource
        // request) goes on without the headers, so kubectl reaches the request itself and
        // prints this refusal rather than a failed discovery.
        if info.resource.is_some()
            && req
                .headers
                .keys()
                .any(|k| k.as_str().starts_with(IMPERSONATE_PREFIX))
        {
            return Err(Refused::new(
                StatusCode::FORBIDDEN,
                "ImpersonationRefused",
                "impersonation headers (kubectl --as, --as-group) are not accepted: requests \
                 run as the identity of the token",
            ));
        }
        // A node's proxy reaches the kubelet's own exec and run endpoints, which the gateway
        // could neither decide as exec nor record.
        if info.resource.as_deref() == Some("nodes")
            && (info.verb == KubeVerb::Proxy || info.subresource.as_deref() == Some("proxy"))
        {
            return Err(Refused::new(
                StatusCode::FORBIDDEN,
                "NodeProxyRefused",
                "the node proxy reaches the kubelet's exec and run endpoints, which cannot be \
                 decided or recorded here; it is refused",
            ));
        }
        let mut text = format!("{} {}", req.method, req.encoded);
        let mut binding = format!("{} {}", req.method, req.decoded);
        if let Some(q) = req.query {
            for s in [&mut text, &mut binding] {
                s.push('?');
                s.push_str(q);
            }
        }
        Ok(Described {
            action: Action::Kube(Arc::new(info)),
            text,
            binding,
        })
    }

    fn error(&self, code: StatusCode, reason: &str, message: &str) -> Response<Body> {
        status(code, reason, message)
    }

    fn waiting(&self) -> Waiting {
        Waiting::Hold
    }

    fn prepare(&self, p: &Prepare<'_>, h: &mut HeaderMap) -> Result<(), String> {
        // The caller's impersonation, and the front-proxy identity headers an API server
        // trusts from an authenticating proxy, are never passed on.
        let callers: Vec<HeaderName> = h
            .keys()
            .filter(|k| {
                let k = k.as_str();
                k.starts_with(IMPERSONATE_PREFIX) || k.starts_with("x-remote-")
            })
            .cloned()
            .collect();
        for k in callers {
            h.remove(k);
        }
        if p.conn.kube.as_ref().is_some_and(|k| k.impersonate) {
            // `system:` names are the cluster's own (`system:masters` is cluster-admin): an
            // identity provider's group of that name must not become one.
            let reserved = std::iter::once(&p.identity.subject)
                .chain(&p.identity.groups)
                .find(|n| n.starts_with("system:"));
            if let Some(n) = reserved {
                return Err(format!(
                    "`{n}` is a name reserved by Kubernetes and is not impersonated"
                ));
            }
            let user = HeaderValue::from_str(&p.identity.subject)
                .map_err(|_| "the caller's subject cannot be sent as Impersonate-User")?;
            h.insert(HeaderName::from_static("impersonate-user"), user);
            for g in &p.identity.groups {
                let v = HeaderValue::from_str(g)
                    .map_err(|_| format!("group `{g}` cannot be sent as Impersonate-Group"))?;
                h.append(HeaderName::from_static("impersonate-group"), v);
            }
        }
        // Discovery, OpenAPI and version documents hold no cluster data: asked for as the
        // client likes. Resource requests of a masked session are asked for in JSON.
        let resource = matches!(p.action, Action::Kube(r) if r.path.is_none());
        if p.masked && resource {
            json_only(h);
        }
        Ok(())
    }

    fn upgrade_allowed(&self, action: &Action, kind: &str, h: &HeaderMap) -> Result<(), Refused> {
        let refuse = |why: String| Err(Refused::new(StatusCode::FORBIDDEN, "UpgradeRefused", why));
        let Action::Kube(r) = action else {
            return refuse("not a Kubernetes request".into());
        };
        let websocket = kind.eq_ignore_ascii_case("websocket");
        let spdy = kind.eq_ignore_ascii_case("SPDY/3.1");
        // Only the binary channel protocols are read (and recorded): base64 ones, protocols
        // carrying a token and anything unknown are refused.
        let offered = |name: &str| {
            h.get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .find(|p| !BINARY_CHANNELS.contains(p))
                .map(str::to_string)
        };
        match r.verb {
            KubeVerb::Exec | KubeVerb::Attach if websocket => {
                match offered("sec-websocket-protocol") {
                    Some(p) => refuse(format!(
                        "the WebSocket subprotocol `{p}` cannot be recorded; offer \
                         v5.channel.k8s.io"
                    )),
                    None => Ok(()),
                }
            }
            KubeVerb::Exec | KubeVerb::Attach if spdy => {
                match offered("x-stream-protocol-version") {
                    Some(p) => refuse(format!(
                        "the stream protocol `{p}` cannot be recorded; offer v4.channel.k8s.io"
                    )),
                    None => Ok(()),
                }
            }
            KubeVerb::Exec | KubeVerb::Attach => refuse(format!(
                "{} over {kind} cannot be recorded; use WebSocket or SPDY/3.1",
                r.verb.cedar_id()
            )),
            KubeVerb::PortForward | KubeVerb::Proxy => Ok(()),
            _ => refuse(format!("{} requests cannot upgrade", r.verb.cedar_id())),
        }
    }

    fn tap(
        &self,
        action: &Action,
        ctx: &UpgradeContext<'_>,
    ) -> Result<Option<Box<dyn Tap>>, String> {
        let Action::Kube(r) = action else {
            return Ok(None);
        };
        if !matches!(r.verb, KubeVerb::Exec | KubeVerb::Attach) {
            return Ok(None);
        }
        let target = format!(
            "{}/{}",
            r.namespace.as_deref().unwrap_or("-"),
            r.name.as_deref().unwrap_or("-")
        );
        let title = match &r.command {
            Some(c) => format!("exec {target} -- {c} by {}", ctx.identity.principal()),
            None => format!("attach {target} by {}", ctx.identity.principal()),
        };
        let marker = format!("{} on {}", r.verb.cedar_id(), ctx.connection);
        let tap = ExecTap::open(ctx, &title, &marker)?;
        Ok(Some(Box::new(tap)))
    }

    fn mask_mode(&self, action: &Action, h: &HeaderMap) -> MaskMode {
        if matches!(action, Action::Kube(r) if r.path.is_some()) {
            return MaskMode::Pass;
        }
        let ct = h
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if ct.contains("protobuf") {
            return MaskMode::Withhold(
                "the API server answered in protobuf, which cannot be masked; the response \
                 is withheld"
                    .into(),
            );
        }
        let hint = proxy_http::mask::hint(h);
        if let Action::Kube(r) = action {
            if r.subresource.as_deref() == Some("log") {
                return MaskMode::Lines(TypeHint::Text);
            }
            if hint != Some(TypeHint::Json) {
                // YAML, CBOR, no type at all: nothing the masking reads, so nothing passes.
                return MaskMode::Withhold(format!(
                    "the API server answered `{ct}`, which cannot be masked; the response is \
                     withheld"
                ));
            }
            if r.verb == KubeVerb::Watch {
                return MaskMode::Lines(TypeHint::Json);
            }
        }
        hint.map_or(MaskMode::Pass, MaskMode::Whole)
    }

    fn rewrites(&self, action: &Action) -> bool {
        matches!(action, Action::Kube(r) if r.path.as_deref() == Some(OPENAPI_V3))
    }

    fn rewrite(&self, _action: &Action, prefix: &str, doc: &mut serde_json::Value) {
        // The OpenAPI v3 index names each document by a server-relative URL, which kubectl
        // requests as it is: below the connection's prefix, or it would miss the gateway's
        // route.
        if prefix.is_empty() {
            return;
        }
        let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
            return;
        };
        for entry in paths.values_mut() {
            if let Some(url) = entry.get_mut("serverRelativeURL")
                && let Some(u) = url.as_str()
                && u.starts_with('/')
            {
                *url = serde_json::Value::String(format!("{prefix}{u}"));
            }
        }
    }

    fn reads_documents(&self) -> bool {
        true
    }

    fn mask_document(
        &self,
        masks: &SessionMasks,
        doc: &mut serde_json::Value,
        counts: &mut MaskCounts,
    ) {
        crate::secrets::mask_document(masks, doc, counts);
    }
}

/// Ask for JSON only: masking reads JSON. JSON media ranges the client named (with their
/// `as=Table` parameters) are kept; anything else (protobuf, YAML, CBOR, `*/*`) goes.
fn json_only(h: &mut HeaderMap) {
    let accept = h
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let kept: Vec<&str> = accept
        .split(',')
        .map(str::trim)
        .filter(|t| {
            let essence = t.split(';').next().unwrap_or("").trim();
            essence.eq_ignore_ascii_case("application/json")
        })
        .collect();
    let value = if kept.is_empty() {
        "application/json".to_string()
    } else {
        kept.join(",")
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.insert(ACCEPT, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protobuf_is_taken_out_of_accept() {
        let mut h = HeaderMap::new();
        h.insert(
            ACCEPT,
            HeaderValue::from_static(
                "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json",
            ),
        );
        json_only(&mut h);
        assert_eq!(h[ACCEPT], "application/json");
        h.insert(
            ACCEPT,
            HeaderValue::from_static("application/vnd.kubernetes.protobuf"),
        );
        json_only(&mut h);
        assert_eq!(h[ACCEPT], "application/json");
        h.insert(
            ACCEPT,
            HeaderValue::from_static(
                "application/yaml, application/json;as=Table;v=v1;g=meta.k8s.io",
            ),
        );
        json_only(&mut h);
        assert_eq!(h[ACCEPT], "application/json;as=Table;v=v1;g=meta.k8s.io");
        h.remove(ACCEPT);
        json_only(&mut h);
        assert_eq!(h[ACCEPT], "application/json");
    }
}
