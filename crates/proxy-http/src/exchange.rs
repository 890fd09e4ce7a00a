//! What an exchange looked like, for the audit trail: the request's and the response's
//! headers (credentials redacted) and the first bytes of each body, masked by the session's
//! detectors. Recorded in the request's `command_end` when its connection asks for it
//! (`record_headers`, `record_body_bytes`); `portcullis replay` prints it.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use base64::Engine as _;
use bytes::Bytes;
use gateway_core::config::ConnectionConfig;
use gateway_core::masking::{MaskCounts, SessionMasks, TypeHint};
use http_body::{Frame, SizeHint};
use hyper::HeaderMap;
use serde_json::{Value, json};

use crate::body::{Body, BoxError};
use crate::dialect::Dialect;

/// Most body bytes a connection may record per direction.
pub const MAX_RECORDED_BODY: usize = 64 * 1024;
/// Bytes kept past the recorded length, so a value the cut falls in is masked whole (the
/// detectors see all of it) before the masked text is cut.
const MARGIN: usize = 256;

/// What a connection records of each exchange.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Recording {
    headers: bool,
    body_bytes: usize,
}

impl Recording {
    /// What `conn` records, if anything.
    pub fn of(conn: &ConnectionConfig) -> Option<Recording> {
        let h = conn.http.as_ref()?;
        (h.record_headers || h.record_body_bytes > 0).then_some(Recording {
            headers: h.record_headers,
            body_bytes: h.record_body_bytes.min(MAX_RECORDED_BODY),
        })
    }
}

/// Headers whose values are never recorded: any name that speaks of authentication,
/// sessions, cookies, tokens, secrets, passwords, signatures, credentials or keys, and any
/// value in an authentication scheme's form (`Bearer …`, `Basic …`, `Digest …`).
fn secret_header(name: &str, value: &[u8]) -> bool {
    const WORDS: [&str; 10] = [
        "auth",
        "session",
        "cookie",
        "token",
        "secret",
        "password",
        "signature",
        "credential",
        "key",
        "dpop",
    ];
    const SCHEMES: [&[u8]; 3] = [b"bearer ", b"basic ", b"digest "];
    WORDS.iter().any(|w| name.contains(w))
        || SCHEMES
            .iter()
            .any(|s| value.len() >= s.len() && value[..s.len()].eq_ignore_ascii_case(s))
}

/// The first bytes of a body, as it passed (up to the recorded length and a margin).
#[derive(Debug, Default)]
struct Sample {
    head: Vec<u8>,
    /// More passed than was kept.
    truncated: bool,
}

/// One exchange being recorded.
pub(crate) struct Exchange {
    rec: Recording,
    masks: Option<Arc<SessionMasks>>,
    dialect: Arc<dyn Dialect>,
    /// The request body's type, as its `Content-Type` says.
    request_hint: Option<TypeHint>,
    request_headers: Option<Value>,
    request_body: Option<Arc<Mutex<Sample>>>,
    response_headers: Option<Value>,
    response_body: Option<Arc<Mutex<Sample>>>,
}

impl Exchange {
    /// Start recording a request with headers `h` (as the client sent them) and `body`;
    /// the body to send on.
    pub fn request(
        rec: Recording,
        masks: Option<Arc<SessionMasks>>,
        dialect: Arc<dyn Dialect>,
        h: &HeaderMap,
        body: Body,
    ) -> (Exchange, Body) {
        let mut x = Exchange {
            rec,
            dialect,
            request_hint: crate::mask::hint(h),
            request_headers: None,
            request_body: None,
            response_headers: None,
            response_body: None,
            masks,
        };
        x.request_headers = rec.headers.then(|| x.headers(h));
        let body = x.sample(body, true);
        (x, body)
    }

    /// Record the response's headers `h` (as sent to the client) and `body`; the body to
    /// send on.
    pub fn response(&mut self, h: &HeaderMap, body: Body) -> Body {
        if self.rec.headers {
            self.response_headers = Some(self.headers(h));
        }
        self.sample(body, false)
    }

    /// The recording, for the `command_end` detail.
    pub fn finish(&self) -> Value {
        let side = |headers: &Option<Value>, body: &Option<Arc<Mutex<Sample>>>, request| {
            let mut v = json!({});
            if let Some(h) = headers {
                v["headers"] = h.clone();
            }
            if let Some(b) = body {
                v["body"] = match b.lock() {
                    Ok(s) => self.body(&s, request),
                    Err(_) => Value::Null,
                };
            }
            v
        };
        json!({
            "request": side(&self.request_headers, &self.request_body, true),
            "response": side(&self.response_headers, &self.response_body, false),
        })
    }

    /// `[[name, value], …]`, credentials as `[REDACTED]`, other values masked.
    fn headers(&self, h: &HeaderMap) -> Value {
        let mut counts = MaskCounts::new();
        let out = h
            .iter()
            .map(|(name, value)| {
                let n = name.as_str();
                let v = if secret_header(n, value.as_bytes()) {
                    "[REDACTED]".to_string()
                } else {
                    String::from_utf8_lossy(&self.mask(value.as_bytes(), &mut counts)).into_owned()
                };
                json!([n, v])
            })
            .collect();
        Value::Array(out)
    }

    /// A body's recorded head: masked whole (margin included), then cut to the recorded
    /// length; text when it is UTF-8, else base64 — binary bodies are not read by the text
    /// detectors, so a masked session does not record them. A request body is masked as a
    /// response would be (the dialect's documents, JSON paths, detectors); one cut short
    /// where JSON paths or documents would apply cannot be, and is not recorded.
    fn body(&self, s: &Sample, request: bool) -> Value {
        let mut counts = MaskCounts::new();
        let mut head = match (&self.masks, request) {
            (Some(m), true) => match self.mask_request(m, s, &mut counts) {
                Ok(h) => h,
                Err(why) => return json!({ "withheld": why }),
            },
            _ => self.mask(&s.head, &mut counts),
        };
        let limit = self.rec.body_bytes;
        let truncated = s.truncated || s.head.len() > limit;
        if truncated {
            head.truncate(limit);
        }
        // A cut may fall inside a UTF-8 sequence: up to 3 bytes at the end are dropped.
        let text = match std::str::from_utf8(&head) {
            Ok(t) => Some(t),
            Err(e) if truncated && e.error_len().is_none() => {
                std::str::from_utf8(&head[..e.valid_up_to()]).ok()
            }
            Err(_) => None,
        };
        match (text, &self.masks) {
            (Some(t), _) => json!({ "text": t, "truncated": truncated }),
            (None, None) => json!({
                "base64": base64::engine::general_purpose::STANDARD.encode(&head),
                "truncated": truncated,
            }),
            (None, Some(_)) => json!({ "withheld": "binary, not recorded in a masked session" }),
        }
    }

    /// A request body's head, masked as the session's responses are.
    fn mask_request(
        &self,
        masks: &SessionMasks,
        s: &Sample,
        counts: &mut MaskCounts,
    ) -> Result<Vec<u8>, String> {
        let json = self.request_hint == Some(TypeHint::Json);
        if !json || s.head.is_empty() {
            return Ok(self.mask(&s.head, counts));
        }
        let structured = self.dialect.reads_documents() || masks.has_json_paths();
        if s.truncated && structured {
            return Err("JSON cut short, which path rules cannot mask".into());
        }
        if s.truncated {
            return Ok(self.mask(&s.head, counts));
        }
        let whole = Bytes::copy_from_slice(&s.head);
        crate::mask::mask_body(masks, TypeHint::Json, whole, counts, Some(&*self.dialect))
            .map(|b| b.to_vec())
            .map_err(|e| format!("not masked: {e}"))
    }

    /// `value` with the session's detectors applied (as is without masking).
    fn mask(&self, value: &[u8], counts: &mut MaskCounts) -> Vec<u8> {
        match &self.masks {
            Some(m) => {
                let text = Bytes::copy_from_slice(value);
                crate::mask::detect(m, TypeHint::Text, text, counts).to_vec()
            }
            None => value.to_vec(),
        }
    }

    /// `body`, keeping its first bytes for the recording when bodies are recorded.
    fn sample(&mut self, body: Body, request: bool) -> Body {
        if self.rec.body_bytes == 0 {
            return body;
        }
        let sample = Arc::new(Mutex::new(Sample::default()));
        if request {
            self.request_body = Some(sample.clone());
        } else {
            self.response_body = Some(sample.clone());
        }
        crate::body::boxed(Sampled {
            inner: body,
            sample,
            left: self.rec.body_bytes + MARGIN,
        })
    }
}

/// A body that keeps its first bytes in a [`Sample`] as they pass (nothing is delayed; the
/// lock is taken only while bytes are still kept, and once to mark the cut).
struct Sampled {
    inner: Body,
    sample: Arc<Mutex<Sample>>,
    /// Bytes still to keep; `usize::MAX` once the cut is marked.
    left: usize,
}

impl http_body::Body for Sampled {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(d) = frame.data_ref()
            && !d.is_empty()
            && self.left != usize::MAX
        {
            let keep = self.left.min(d.len());
            if let Ok(mut s) = self.sample.lock() {
                s.head.extend_from_slice(&d[..keep]);
                s.truncated = keep < d.len();
            }
            self.left = if keep < d.len() {
                usize::MAX
            } else {
                self.left - keep
            };
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    fn api() -> Arc<dyn Dialect> {
        Arc::new(crate::dialect::HttpApi)
    }

    fn rec(headers: bool, body_bytes: usize) -> Recording {
        Recording {
            headers,
            body_bytes,
        }
    }

    #[tokio::test]
    async fn bodies_are_cut_and_headers_redacted() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer caller-token".parse().unwrap());
        h.insert("x-ms-copy-source-authorization", "x".parse().unwrap());
        h.insert("ocp-apim-subscription-key", "k".parse().unwrap());
        h.insert("x-upstream", "Basic dXNlcjpwdw==".parse().unwrap());
        h.insert("content-type", "application/json".parse().unwrap());
        let body = crate::body::full(Bytes::from_static("{\"é\":\"0123456789\"}".as_bytes()));
        let (mut x, body) = Exchange::request(rec(true, 6), None, api(), &h, body);
        let sent = body.collect().await.unwrap().to_bytes();
        assert_eq!(sent.len(), 19, "the body passes whole");
        let resp = x.response(&HeaderMap::new(), crate::body::full(&b"\xff\xfe"[..]));
        resp.collect().await.unwrap();
        let v = x.finish();
        let req = &v["request"];
        let heads = req["headers"].to_string();
        assert!(!heads.contains("caller-token"), "{heads}");
        assert!(!heads.contains("\"x\""), "{heads}");
        assert!(!heads.contains("dXNlcjpwdw"), "{heads}");
        assert_eq!(heads.matches("[REDACTED]").count(), 4, "{heads}");
        assert!(!heads.contains("\"k\""), "{heads}");
        assert!(heads.contains("application/json"), "{heads}");
        // Six bytes: `{"é":`, whole characters.
        assert_eq!(req["body"]["text"], "{\"é\":");
        assert_eq!(req["body"]["truncated"], true);
        // Three: the cut falls inside `é`, which is dropped.
        let body = crate::body::full(Bytes::from_static("{\"é\":1}".as_bytes()));
        let (x5, body) = Exchange::request(rec(false, 3), None, api(), &HeaderMap::new(), body);
        body.collect().await.unwrap();
        assert_eq!(x5.finish()["request"]["body"]["text"], "{\"");
        assert_eq!(v["response"]["body"]["base64"], "//4=");
        assert_eq!(v["response"]["body"]["truncated"], false);
    }

    #[tokio::test]
    async fn nothing_is_kept_when_bodies_are_not_recorded() {
        let body = crate::body::full(Bytes::from_static(b"abc"));
        let (x, body) = Exchange::request(rec(true, 0), None, api(), &HeaderMap::new(), body);
        body.collect().await.unwrap();
        let v = x.finish();
        assert!(v["request"].get("body").is_none(), "{v}");
        assert_eq!(v["request"]["headers"], json!([]));
    }

    /// A value the cut falls in is masked whole before the cut: no part of it is recorded.
    #[tokio::test]
    async fn a_value_across_the_cut_is_masked_not_halved() {
        use gateway_core::config::MaskingConfig;
        use gateway_core::masking::MaskingEngine;
        let block = MaskingConfig {
            connections: vec!["arm".into()],
            detectors: vec!["card".into(), "email".into()],
            ..Default::default()
        };
        let masks = MaskingEngine::new(&[block], [3; 32])
            .unwrap()
            .for_session("arm", &[]);
        let text = "note: pay with 4111 1111 1111 1111 or mail ada@example.com today";
        let body = crate::body::full(Bytes::from_static(text.as_bytes()));
        let (x, body) = Exchange::request(rec(false, 22), masks, api(), &HeaderMap::new(), body);
        body.collect().await.unwrap();
        let v = x.finish();
        let got = v["request"]["body"]["text"].as_str().unwrap();
        assert!(got.starts_with("note: pay with "), "{got}");
        assert!(!got.contains("4111"), "{got}");
        assert!(got.len() <= 22, "{got}");
        assert_eq!(v["request"]["body"]["truncated"], true);
    }

    /// A request body is masked as a response would be: JSON path rules apply to it; JSON
    /// cut short, where they cannot, is not recorded.
    #[tokio::test]
    async fn request_json_is_masked_by_path_or_withheld() {
        use gateway_core::config::MaskingConfig;
        use gateway_core::masking::MaskingEngine;
        let block = MaskingConfig {
            connections: vec!["arm".into()],
            json_paths: vec!["$.value".into()],
            ..Default::default()
        };
        let masks = MaskingEngine::new(&[block], [3; 32])
            .unwrap()
            .for_session("arm", &[]);
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/json".parse().unwrap());
        let record = |doc: String| {
            let (masks, h) = (masks.clone(), h.clone());
            async move {
                let body = crate::body::full(Bytes::from(doc));
                let (x, body) = Exchange::request(rec(false, 64), masks, api(), &h, body);
                body.collect().await.unwrap();
                x.finish()["request"]["body"].clone()
            }
        };
        let got = record(r#"{"value":"plain-secret-value","id":7}"#.to_string()).await;
        let text = got["text"].as_str().unwrap();
        assert!(!text.contains("plain-secret-value"), "{got}");
        assert!(text.contains("\"id\":7"), "{got}");
        let long = format!(
            r#"{{"value":"plain-secret-value","pad":"{}"}}"#,
            "x".repeat(400)
        );
        let got = record(long).await;
        assert!(got["withheld"].is_string(), "{got}");
        assert!(got.get("text").is_none(), "{got}");
    }
}
