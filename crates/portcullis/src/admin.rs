//! The admin listener: health, readiness, Prometheus metrics, the built-in issuer's OIDC
//! discovery and JWKS, the token exchange endpoint, and the approvals API.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gateway_core::identity::builtin::BuiltinIssuer;
use gateway_core::services::Services;
use serde::Deserialize;
use serde_json::json;

#[derive(Clone)]
struct AdminState {
    services: Arc<Services>,
    builtin: Option<Arc<BuiltinIssuer>>,
}

/// All admin routes.
pub fn router(services: Arc<Services>, builtin: Option<Arc<BuiltinIssuer>>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/v1/token/exchange", post(exchange))
        .with_state(AdminState {
            services: services.clone(),
            builtin,
        })
        .merge(crate::admin_approvals::router(services))
}

async fn readyz(State(st): State<AdminState>) -> Response {
    let store = st.services.store.clone();
    let store_ok = tokio::task::spawn_blocking(move || {
        store
            .query_events(&gateway_core::audit::EventFilter {
                limit: Some(1),
                ..Default::default()
            })
            .is_ok()
    })
    .await
    .unwrap_or(false);
    if store_ok {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response()
    }
}

async fn metrics(State(st): State<AdminState>) -> Response {
    let mut body = st.services.metrics.render();
    let a = st.services.audit.stats();
    body.push_str(&format!(
        "# HELP portcullis_audit_events_total Audit events committed.\n# TYPE portcullis_audit_events_total counter\nportcullis_audit_events_total {}\n\
         # HELP portcullis_audit_batches_total Audit commits (group commit batches).\n# TYPE portcullis_audit_batches_total counter\nportcullis_audit_batches_total {}\n\
         # HELP portcullis_audit_write_failures_total Audit batches that failed to commit.\n# TYPE portcullis_audit_write_failures_total counter\nportcullis_audit_write_failures_total {}\n\
         # HELP portcullis_audit_indexed_total Audit events copied from the journal into the store.\n# TYPE portcullis_audit_indexed_total counter\nportcullis_audit_indexed_total {}\n\
         # HELP portcullis_audit_store_lag_events Audit events journaled and not yet in the store.\n# TYPE portcullis_audit_store_lag_events gauge\nportcullis_audit_store_lag_events {}\n\
         # HELP portcullis_audit_anchors_total Signed chain heads written to the anchor sink.\n# TYPE portcullis_audit_anchors_total counter\nportcullis_audit_anchors_total {}\n\
         # HELP portcullis_audit_anchor_failures_total Chain heads that could not be anchored (retried).\n# TYPE portcullis_audit_anchor_failures_total counter\nportcullis_audit_anchor_failures_total {}\n",
        a.events, a.batches, a.failed_batches, a.indexed, a.journal_lag, a.anchors, a.anchor_failures
    ));
    let ap = st.services.approvals.stats();
    body.push_str(&format!(
        "# HELP portcullis_approval_failures_total Approval audit writes and expiry sweeps that failed.\n# TYPE portcullis_approval_failures_total counter\n\
         portcullis_approval_failures_total{{stage=\"audit\"}} {}\nportcullis_approval_failures_total{{stage=\"sweep\"}} {}\n",
        ap.audit_failures, ap.sweep_failures
    ));
    if let Some(w) = st.services.approvals.webhook_stats() {
        body.push_str("# HELP portcullis_webhook_notices_total Approval notices by delivery outcome.\n# TYPE portcullis_webhook_notices_total counter\n");
        for (outcome, n) in [
            ("delivered", w.delivered),
            ("failed", w.failed),
            ("dropped", w.dropped),
        ] {
            body.push_str(&format!(
                "portcullis_webhook_notices_total{{outcome=\"{outcome}\"}} {n}\n"
            ));
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn discovery(State(st): State<AdminState>) -> Response {
    match &st.builtin {
        Some(b) => Json(b.discovery_json()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "the built-in issuer is not enabled\n",
        )
            .into_response(),
    }
}

async fn jwks(State(st): State<AdminState>) -> Response {
    match &st.builtin {
        Some(b) => Json(b.jwks_json()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "the built-in issuer is not enabled\n",
        )
            .into_response(),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ExchangeRequest {
    /// Requested lifetime, e.g. `15m`; capped by the token's own expiry and the gateway's maximum.
    #[serde(default)]
    ttl: Option<String>,
}

/// Trade the bearer JWT for a short opaque access key bound to the same identity.
async fn exchange(
    State(st): State<AdminState>,
    headers: HeaderMap,
    body: Option<Json<ExchangeRequest>>,
) -> Response {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return error(
            StatusCode::UNAUTHORIZED,
            "send the token as `Authorization: Bearer <token>`",
        );
    };
    let req = body.map(|Json(b)| b).unwrap_or_default();
    let cfg = &st.services.config;
    let max_ttl = match gateway_core::config::parse_duration(&cfg.identity.access_key_max_ttl) {
        Ok(d) => d,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let ttl = match req.ttl.as_deref().map(gateway_core::config::parse_duration) {
        Some(Ok(d)) => d,
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, &format!("ttl: {e}")),
        None => max_ttl,
    };
    match gateway_core::identity::access_key::exchange(
        &st.services.verifier,
        st.services.store.as_ref(),
        token.trim(),
        ttl,
        max_ttl,
    )
    .await
    {
        Ok((key, record)) => {
            let mut ev =
                gateway_core::audit::AuditEvent::new(gateway_core::audit::EventKind::AccessKey, "");
            ev.identity = Some(std::sync::Arc::new(record.identity.clone()));
            ev.detail = Some(json!({"minted": record.id, "expires_at": record.expires_at}));
            if st.services.audit.record(ev).await.is_err() {
                return error(StatusCode::SERVICE_UNAVAILABLE, "audit is unavailable");
            }
            Json(json!({
                "access_key": key,
                "id": record.id,
                "principal": record.identity.principal,
                "expires_at": record.expires_at,
            }))
            .into_response()
        }
        Err(e) => error(StatusCode::UNAUTHORIZED, &e.to_string()),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}
