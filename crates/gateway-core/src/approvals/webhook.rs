//! Webhook notifier: posts new requests and their outcomes as generic JSON or as a Slack
//! incoming-webhook message. Each hook has a background task and a bounded queue; delivery is
//! retried with exponential backoff. The caller never waits: a full queue drops the notice
//! and counts it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use super::model::ApprovalRequest;
use super::notice;
use crate::config::{WebhookConfig, WebhookFormat};

/// Header carrying the HMAC-SHA256 of the body when a hook has a secret.
pub const SIGNATURE_HEADER: &str = "X-Portcullis-Signature";

/// Something to announce: a new request or its outcome (from the request's state).
#[derive(Debug, Clone)]
pub struct Notice(Arc<ApprovalRequest>);

impl Notice {
    /// A notice of `req` as it is now.
    pub fn new(req: &ApprovalRequest) -> Notice {
        Notice(Arc::new(req.clone()))
    }
}

/// One resolved hook.
#[derive(Clone)]
pub struct WebhookTarget {
    pub url: String,
    pub format: WebhookFormat,
    /// Signs each body when set.
    pub secret: Option<String>,
}

impl std::fmt::Debug for WebhookTarget {
    // The URL (Slack's carries a token) and secret stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("format", &self.format)
            .field("signed", &self.secret.is_some())
            .finish()
    }
}

impl WebhookTarget {
    /// Resolve a configured hook (reads `url_env` / `secret_env`).
    pub fn from_config(c: &WebhookConfig) -> Result<WebhookTarget, String> {
        Ok(WebhookTarget {
            url: c.resolve_url()?,
            format: c.format,
            secret: c.resolve_secret()?,
        })
    }
}

/// Queue and retry knobs.
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    /// Notices waiting per hook before new ones are dropped.
    pub queue: usize,
    /// Tries per notice, the first included.
    pub attempts: u32,
    /// Wait before the first retry; doubles each time.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        WebhookOptions {
            queue: 256,
            attempts: 5,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Counters for metrics, summed over all hooks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookStats {
    /// Notices a hook accepted (2xx).
    pub delivered: u64,
    /// Notices given up on after the last try (or refused with a 4xx).
    pub failed: u64,
    /// Notices not queued because the hook's queue was full.
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

/// Sends notices to every configured hook; clones share the hooks.
#[derive(Debug, Clone)]
pub struct WebhookNotifier {
    queues: Vec<mpsc::Sender<Notice>>,
    counters: Arc<Counters>,
}

impl WebhookNotifier {
    /// A notifier for the configured hooks, or none when there are none. Must run inside a
    /// tokio runtime.
    pub fn from_config(hooks: &[WebhookConfig]) -> Result<Option<WebhookNotifier>, String> {
        if hooks.is_empty() {
            return Ok(None);
        }
        let targets = hooks
            .iter()
            .enumerate()
            .map(|(i, h)| {
                WebhookTarget::from_config(h).map_err(|e| format!("approvals.webhooks[{i}]: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        WebhookNotifier::start(targets, WebhookOptions::default()).map(Some)
    }

    /// Start one delivery task per target. Must run inside a tokio runtime.
    pub fn start(
        targets: Vec<WebhookTarget>,
        options: WebhookOptions,
    ) -> Result<WebhookNotifier, String> {
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the webhook HTTP client: {e}"))?;
        let counters = Arc::new(Counters::default());
        let mut queues = Vec::with_capacity(targets.len());
        for (i, target) in targets.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel(options.queue.max(1));
            tokio::spawn(run(
                i,
                target,
                rx,
                client.clone(),
                options.clone(),
                counters.clone(),
            ));
            queues.push(tx);
        }
        Ok(WebhookNotifier { queues, counters })
    }

    /// Queue `notice` for every hook without waiting; a full queue drops it (counted).
    pub fn notify(&self, notice: Notice) {
        for (i, q) in self.queues.iter().enumerate() {
            if q.try_send(notice.clone()).is_err() {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(webhook = i, approval = %notice.0.id, "webhook queue full; notice dropped");
            }
        }
    }

    /// Delivered, failed and dropped notices so far.
    pub fn stats(&self) -> WebhookStats {
        let c = &self.counters;
        WebhookStats {
            delivered: c.delivered.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
        }
    }
}

/// The body `format` gives `req`.
pub(crate) fn body(format: WebhookFormat, req: &ApprovalRequest) -> Vec<u8> {
    let v = match format {
        WebhookFormat::Json => notice::json_body(req),
        WebhookFormat::Slack => notice::slack_body(req),
    };
    v.to_string().into_bytes()
}

/// Hex HMAC-SHA256 of `body` under `secret`, as sent in [`SIGNATURE_HEADER`].
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    format!(
        "sha256={}",
        hex::encode(aws_lc_rs::hmac::sign(&key, body).as_ref())
    )
}

/// Deliver queued notices for one hook until every sender is gone.
async fn run(
    index: usize,
    target: WebhookTarget,
    mut rx: mpsc::Receiver<Notice>,
    client: reqwest::Client,
    options: WebhookOptions,
    counters: Arc<Counters>,
) {
    while let Some(Notice(req)) = rx.recv().await {
        let payload = body(target.format, &req);
        match deliver(&client, &target, payload, &options).await {
            Ok(()) => {
                counters.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(webhook = index, approval = %req.id, error = %e, "webhook delivery failed");
            }
        }
    }
}

/// Whether a failed try is worth repeating.
enum Failure {
    Retry(String),
    Final(String),
}

async fn deliver(
    client: &reqwest::Client,
    target: &WebhookTarget,
    payload: Vec<u8>,
    options: &WebhookOptions,
) -> Result<(), String> {
    let mut delay = options.backoff;
    let attempts = options.attempts.max(1);
    for attempt in 1..=attempts {
        match post(client, target, payload.clone()).await {
            Ok(()) => return Ok(()),
            Err(Failure::Final(e)) => return Err(e),
            Err(Failure::Retry(e)) if attempt == attempts => {
                return Err(format!("{e} (after {attempts} tries)"));
            }
            Err(Failure::Retry(_)) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(options.max_backoff);
            }
        }
    }
    Err("no delivery attempted".to_string())
}

async fn post(
    client: &reqwest::Client,
    target: &WebhookTarget,
    payload: Vec<u8>,
) -> Result<(), Failure> {
    let mut req = client
        .post(&target.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    if let Some(secret) = &target.secret {
        req = req.header(SIGNATURE_HEADER, signature(secret, &payload));
    }
    // Without the URL: reqwest puts it in its error text, and Slack's carries a token.
    let resp = req
        .body(payload)
        .send()
        .await
        .map_err(|e| Failure::Retry(format!("request failed: {}", e.without_url())))?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
        Err(Failure::Retry(format!("HTTP {status}")))
    } else {
        Err(Failure::Final(format!("HTTP {status} (not retried)")))
    }
}
