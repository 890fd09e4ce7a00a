//! The approvals API on the admin listener. Every call is made by an identity: the caller
//! sends its token (or access key) as `Authorization: Bearer …`, verified like any login.
//!
//! - `GET  /v1/approvals[?state=pending&connection=C&requester=R&limit=N]`
//! - `GET  /v1/approvals/{id}`
//! - `POST /v1/approvals` `{"connection", "action", "for": "30m", "reason"}`: ask for a window
//! - `POST /v1/approvals/{id}/approve|deny|cancel` `{"reason"}`

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gateway_core::Identity;
use gateway_core::approvals::{
    ApprovalError, ApprovalFilter, NewKind, NewRequest, State as ReqState,
};
use gateway_core::services::Services;
use serde::Deserialize;
use serde_json::json;

/// Query parameters of the list call.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
    connection: Option<String>,
    requester: Option<String>,
    limit: Option<usize>,
}

/// Body of a window request.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowRequest {
    connection: String,
    action: String,
    #[serde(rename = "for")]
    duration: String,
    #[serde(default)]
    reason: Option<String>,
}

/// Body of a vote or a cancel.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct VoteBody {
    #[serde(default)]
    reason: Option<String>,
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn refused(e: &ApprovalError) -> Response {
    let status = match e {
        ApprovalError::NotFound(_) => StatusCode::NOT_FOUND,
        ApprovalError::NotPending { .. } | ApprovalError::Busy(_) => StatusCode::CONFLICT,
        ApprovalError::SelfVote(_)
        | ApprovalError::AlreadyVoted(_)
        | ApprovalError::NotApprover { .. }
        | ApprovalError::NotRequester(_) => StatusCode::FORBIDDEN,
        ApprovalError::WindowTooLong { .. } | ApprovalError::Invalid(_) => StatusCode::BAD_REQUEST,
        ApprovalError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, &e.to_string())
}

/// The caller's identity from its bearer credential.
async fn caller(services: &Services, headers: &HeaderMap) -> Result<Identity, Response> {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "send your token as `Authorization: Bearer <token>`",
        ));
    };
    services
        .verifier
        .verify(token)
        .await
        .map_err(|e| error(StatusCode::UNAUTHORIZED, &e.to_string()))
}

pub async fn list(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    let who = match caller(&services, &headers).await {
        Ok(who) => who,
        Err(r) => return r,
    };
    let state = match q.state.as_deref().map(ReqState::parse) {
        Some(None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "state must be one of pending, approved, denied, expired, cancelled, abandoned",
            );
        }
        Some(Some(s)) => Some(s),
        None => None,
    };
    let filter = ApprovalFilter {
        state,
        connection: q.connection,
        requester: q.requester,
        ..ApprovalFilter::default()
    };
    match services.approvals.list(&filter).await {
        Ok(mut reqs) => {
            // Only what the caller may see; the limit counts those (the newest).
            reqs.retain(|r| r.visible_to(&who));
            if let Some(limit) = q.limit {
                let skip = reqs.len().saturating_sub(limit);
                reqs.drain(..skip);
            }
            Json(reqs).into_response()
        }
        Err(e) => refused(&e),
    }
}

pub async fn show(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let who = match caller(&services, &headers).await {
        Ok(who) => who,
        Err(r) => return r,
    };
    match services.approvals.get(&id).await {
        // Someone who may not see it is told it does not exist, like any other id.
        Ok(r) if !r.visible_to(&who) => refused(&ApprovalError::NotFound(id)),
        Ok(r) => Json(r).into_response(),
        Err(e) => refused(&e),
    }
}

pub async fn request(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    body: Result<Json<WindowRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let who = match caller(&services, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    let duration = match gateway_core::config::parse_duration(&body.duration) {
        Ok(d) => d,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("for: {e}")),
    };
    if !services
        .config
        .connections
        .iter()
        .any(|c| c.name == body.connection)
    {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("no connection named \"{}\"", body.connection),
        );
    }
    let new = NewRequest::new(NewKind::Window { duration }, &body.connection, &body.action)
        .with_reason(body.reason);
    match services.approvals.request(&who, new).await {
        Ok(r) => (StatusCode::CREATED, Json(r)).into_response(),
        Err(e) => refused(&e),
    }
}

/// What a POST on a request does.
#[derive(Clone, Copy)]
pub enum Verb {
    Approve,
    Deny,
    Cancel,
}

pub async fn act(
    services: Arc<Services>,
    headers: HeaderMap,
    id: String,
    verb: Verb,
    body: Option<Json<VoteBody>>,
) -> Response {
    let who = match caller(&services, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let reason = body.and_then(|Json(b)| b.reason);
    let approvals = &services.approvals;
    let done = match verb {
        Verb::Approve => approvals.vote(&id, &who, true, reason).await,
        Verb::Deny => approvals.vote(&id, &who, false, reason).await,
        Verb::Cancel => approvals.cancel(&id, &who, reason).await,
    };
    match done {
        Ok(r) => Json(r).into_response(),
        Err(e) => refused(&e),
    }
}

pub async fn approve(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<Json<VoteBody>>,
) -> Response {
    act(services, headers, id, Verb::Approve, body).await
}

pub async fn deny(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<Json<VoteBody>>,
) -> Response {
    act(services, headers, id, Verb::Deny, body).await
}

pub async fn cancel(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<Json<VoteBody>>,
) -> Response {
    act(services, headers, id, Verb::Cancel, body).await
}

/// The approvals routes.
pub fn router(services: Arc<Services>) -> axum::Router {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/v1/approvals", get(list).post(request))
        .route("/v1/approvals/{id}", get(show))
        .route("/v1/approvals/{id}/approve", post(approve))
        .route("/v1/approvals/{id}/deny", post(deny))
        .route("/v1/approvals/{id}/cancel", post(cancel))
        .with_state(services)
}
