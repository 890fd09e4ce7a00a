//! The gateway's own answers as Kubernetes `Status` objects, so kubectl prints them as it
//! prints the API server's: `Error from server (Forbidden): portcullis: …`.

use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use proxy_http::body::{Body, full};

/// The `Status` reason kubectl knows for an HTTP status.
fn reason_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        501 | 503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    }
}

/// A `Status` failure: `status`, the gateway's own `cause` (e.g. `ApprovalRequired`) and
/// what the client reads.
pub fn status(status: StatusCode, cause: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("portcullis: {message}"),
        "reason": reason_of(status),
        "details": { "causes": [ { "reason": cause, "message": message } ] },
        "code": status.as_u16(),
    });
    let mut resp = Response::new(full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[tokio::test]
    async fn a_refusal_is_a_status_kubectl_reads() {
        let resp = status(StatusCode::FORBIDDEN, "Forbidden", "kube.delete denied");
        assert_eq!(resp.status(), 403);
        let bytes = resp
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["reason"], "Forbidden");
        assert_eq!(v["code"], 403);
        assert_eq!(v["message"], "portcullis: kube.delete denied");
    }
}
