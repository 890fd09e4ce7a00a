//! `[approvals]`: default approvers, timings and notice webhooks.

use serde::{Deserialize, Serialize};

use super::parse_duration;

/// `[approvals]`: who approves by default, how long requests wait, where they are announced.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// Groups whose members may approve when the rule names no `@approvers`. With none
    /// here, every `@approval` rule must name its `@approvers`.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// How long a request waits for its approvals before it expires.
    #[serde(default = "default_pending_ttl")]
    pub pending_ttl: String,
    /// Longest time window an identity may ask for.
    #[serde(default = "default_max_window")]
    pub max_window: String,
    /// Where new requests and their outcomes are posted (`[[approvals.webhooks]]`).
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        ApprovalsConfig {
            approvers: Vec::new(),
            pending_ttl: default_pending_ttl(),
            max_window: default_max_window(),
            webhooks: Vec::new(),
        }
    }
}

fn default_pending_ttl() -> String {
    "15m".into()
}

fn default_max_window() -> String {
    "8h".into()
}

/// One webhook that hears about approval requests and outcomes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST. Slack-style URLs are secrets: prefer `url_env`.
    #[serde(default)]
    pub url: Option<String>,
    /// Environment variable holding the URL.
    #[serde(default)]
    pub url_env: Option<String>,
    #[serde(default)]
    pub format: WebhookFormat,
    /// Environment variable holding a secret; each body is then signed with HMAC-SHA256 in
    /// the `X-Portcullis-Signature: sha256=<hex>` header.
    #[serde(default)]
    pub secret_env: Option<String>,
}

impl WebhookConfig {
    /// The URL, read from `url` or `url_env`.
    pub fn resolve_url(&self) -> Result<String, String> {
        match (&self.url, &self.url_env) {
            (Some(u), None) => Ok(u.clone()),
            (None, Some(var)) => {
                std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))
            }
            _ => Err("set one of url and url_env".to_string()),
        }
    }

    /// The signing secret, if one is configured.
    pub fn resolve_secret(&self) -> Result<Option<String>, String> {
        self.secret_env
            .as_ref()
            .map(|var| {
                std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))
            })
            .transpose()
    }
}

/// Body shape of a webhook.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// `{"event": "approval.requested", "request": {...}}`.
    #[default]
    Json,
    /// A Slack incoming-webhook message: `{"text": "..."}`.
    Slack,
}

impl ApprovalsConfig {
    /// Problems in this section, each with its path.
    pub(super) fn problems(&self, errs: &mut Vec<String>) {
        for (key, v) in [
            ("pending_ttl", &self.pending_ttl),
            ("max_window", &self.max_window),
        ] {
            match parse_duration(v) {
                Err(e) => errs.push(format!("approvals.{key}: {e}")),
                Ok(d) if d.is_zero() => {
                    errs.push(format!("approvals.{key}: must be longer than 0s"))
                }
                Ok(_) => {}
            }
        }
        for (i, g) in self.approvers.iter().enumerate() {
            if g.trim().is_empty() {
                errs.push(format!("approvals.approvers[{i}]: must not be empty"));
            }
        }
        for (i, w) in self.webhooks.iter().enumerate() {
            let p = format!("approvals.webhooks[{i}]");
            match (&w.url, &w.url_env) {
                (Some(u), None) => {
                    if let Some(e) = url_problem(u) {
                        errs.push(format!("{p}.url: {e}"));
                    }
                }
                // Read with the secrets, by the verbs that send.
                (None, Some(_)) => {}
                _ => errs.push(format!("{p}: set one of url and url_env")),
            }
        }
    }

    /// Webhook URLs and signing secrets held in the environment: checked by the verbs that
    /// send (`serve`, `config check`), not by those that only read the state directory.
    pub(super) fn secret_problems(&self, errs: &mut Vec<String>) {
        for (i, w) in self.webhooks.iter().enumerate() {
            let p = format!("approvals.webhooks[{i}]");
            if w.url_env.is_some() {
                match w.resolve_url() {
                    Err(e) => errs.push(format!("{p}.url_env: {e}")),
                    Ok(u) => {
                        if let Some(e) = url_problem(&u) {
                            errs.push(format!("{p}.url_env: {e}"));
                        }
                    }
                }
            }
            if let Err(e) = w.resolve_secret() {
                errs.push(format!("{p}.secret_env: {e}"));
            }
        }
    }
}

fn url_problem(u: &str) -> Option<&'static str> {
    (!(u.starts_with("https://") || u.starts_with("http://"))).then_some("not an http(s) URL")
}
