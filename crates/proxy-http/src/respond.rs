//! The gateway's own answers, as JSON error bodies in the shape Azure APIs use
//! (`{"error": {"code": …, "message": …}}`), so clients print them as they print the target's.

use hyper::header::{CONTENT_TYPE, HeaderValue};
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
