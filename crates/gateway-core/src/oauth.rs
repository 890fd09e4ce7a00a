//! Access tokens the gateway obtains for itself: the OAuth 2.0 client-credentials grant
//! (RFC 6749 §4.4) against a token endpoint such as Entra ID's, for targets that take a token
//! instead of a password (Azure SQL). The token is cached and fetched again shortly before it
//! expires; concurrent sessions share one request.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

use crate::config::OAuthClientConfig;

/// A token is fetched again this long before it expires (or at half its lifetime, if
/// shorter).
const REFRESH_BEFORE: Duration = Duration::from_secs(300);
/// Longest a token request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest token response read.
const MAX_RESPONSE: usize = 64 * 1024;

/// Where one connection's tokens come from.
pub struct TokenSource {
    endpoint: String,
    client_id: String,
    secret: String,
    scope: Option<String>,
    resource: Option<String>,
    http: reqwest::Client,
    cached: Mutex<Option<Cached>>,
}

struct Cached {
    token: Arc<str>,
    refresh_at: Instant,
    expires_at: Instant,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// A source for `cfg`; the secret is read now (relative paths from `base`).
    pub fn new(cfg: &OAuthClientConfig, base: &Path) -> Result<TokenSource, String> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(TokenSource {
            endpoint: cfg.endpoint()?,
            client_id: cfg.client_id.clone(),
            secret: cfg.secret(base)?,
            scope: cfg.scope().map(str::to_string),
            resource: cfg.resource.clone(),
            http,
            cached: Mutex::new(None),
        })
    }

    /// A valid access token: the cached one, or a new one from the endpoint.
    pub async fn token(&self) -> Result<Arc<str>, String> {
        let mut cached = self.cached.lock().await;
        let now = Instant::now();
        if let Some(c) = cached.as_ref()
            && now < c.refresh_at
        {
            return Ok(c.token.clone());
        }
        match self.fetch().await {
            Ok(fresh) => {
                let token = fresh.token.clone();
                *cached = Some(fresh);
                Ok(token)
            }
            // The endpoint failed while the cached token is still good: use it, try again
            // next time.
            Err(e) => match cached.as_ref() {
                Some(c) if now < c.expires_at => {
                    tracing::warn!(endpoint = %self.endpoint, error = %e, "token refresh failed; the current token is still valid");
                    Ok(c.token.clone())
                }
                _ => Err(e),
            },
        }
    }

    async fn fetch(&self) -> Result<Cached, String> {
        let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
        if let Some(s) = &self.scope {
            form.push(("scope", s));
        }
        if let Some(r) = &self.resource {
            form.push(("resource", r));
        }
        let started = Instant::now();
        let resp = self
            .http
            .post(&self.endpoint)
            .basic_auth(
                percent_encode(&self.client_id),
                Some(percent_encode(&self.secret)),
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form_encode(&form))
            .send()
            .await
            .map_err(|e| format!("token request to {} failed: {e}", self.endpoint))?;
        let status = resp.status();
        let body = read_bounded(resp).await?;
        if !status.is_success() {
            let why = serde_json::from_slice::<ErrorResponse>(&body).map_or_else(
                |_| format!("HTTP {status}"),
                |e| match e.error_description {
                    Some(d) => format!("{}: {d}", e.error),
                    None => e.error,
                },
            );
            return Err(format!(
                "{} refused the token request: {why}",
                self.endpoint
            ));
        }
        let t: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| format!("{} answered with no token: {e}", self.endpoint))?;
        if t.token_type
            .as_deref()
            .is_some_and(|ty| !ty.eq_ignore_ascii_case("bearer"))
        {
            return Err(format!(
                "{} issued a token of type {:?}, not a bearer token",
                self.endpoint, t.token_type
            ));
        }
        if t.access_token.is_empty() {
            return Err(format!("{} issued an empty token", self.endpoint));
        }
        // Without a lifetime, assume a short one.
        let life = Duration::from_secs(t.expires_in.unwrap_or(300).max(1));
        let refresh = life.saturating_sub(REFRESH_BEFORE).max(life / 2);
        Ok(Cached {
            token: Arc::from(t.access_token),
            refresh_at: started + refresh,
            expires_at: started + life,
        })
    }
}

/// `application/x-www-form-urlencoded` pairs.
fn form_encode(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(&percent_encode(k));
        out.push('=');
        out.push_str(&percent_encode(v));
    }
    out
}

/// Unreserved bytes as they are, the rest `%XX` (form values, and the client id and secret
/// in Basic authentication, RFC 6749 §2.3.1).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn read_bounded(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("reading the token response: {e}"))?
    {
        if body.len() + chunk.len() > MAX_RESPONSE {
            return Err(format!("the token response is over {MAX_RESPONSE} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
#[path = "oauth_tests.rs"]
mod tests;
