//! The gateway's own answers, as JSON error bodies in the shape Azure APIs use
//! (`{"error": {"code": …, "message": …}}`), so clients print them as they print the target's.

use hyper::header::{CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};

use crate::body::{Body, full};

/// Header naming the approval a refused request waits for.
pub const APPROVAL_HEADER: &str = "x-portcullis-approval";

/// An error answer: `status`, a machine-readable `code` and what the client reads.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "error": { "code": code, "message": format!("portcullis: {message}") }
    });
    let mut resp = Response::new(full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// 401 with the challenge a bearer client expects.
pub fn unauthorized(message: &str) -> Response<Body> {
    let mut resp = error(StatusCode::UNAUTHORIZED, "Unauthorized", message);
    resp.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"portcullis\""),
    );
    resp
}

/// 403 for a request that needs approval `id`: the same request, sent again once it is
/// approved, runs once.
pub fn approval_required(id: &str, message: &str) -> Response<Body> {
    let mut resp = error(StatusCode::FORBIDDEN, "ApprovalRequired", message);
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert(APPROVAL_HEADER, v);
    }
    resp
}
