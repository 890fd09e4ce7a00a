//! `[connections.http]`: what an HTTP API connection needs beyond its target address.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `[connections.http]`: how the gateway reaches an HTTP API and which credential it adds.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// `https` (default) or `http` (plain, for loopback targets only).
    #[serde(default)]
    pub scheme: HttpScheme,
    /// The `Host` header and TLS server name sent to the target; default: the target's host.
    #[serde(default)]
    pub host: Option<String>,
    /// Host names (the client's `Host`/`:authority`) that select this connection, besides
    /// the path prefix `/c/<name>/`.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The target treats paths case-insensitively (Azure Resource Manager does): policy
    /// sees `context.path` in lower case, so a rule cannot be dodged by changing case.
    #[serde(default)]
    pub case_insensitive: bool,
    /// A header the gateway adds to every request with a value it holds (an API key).
    #[serde(default)]
    pub header: Option<HeldHeader>,
    /// Azure Storage Shared Key: every request is signed with the account key.
    #[serde(default)]
    pub shared_key: Option<SharedKeyConfig>,
    /// Largest response body buffered to be masked (bytes); a larger one is refused.
    /// Default 8 MiB.
    #[serde(default)]
    pub max_masked_body: Option<usize>,
    /// Largest request body read to bind an approval to it (bytes). Default 1 MiB.
    #[serde(default)]
    pub max_review_body: Option<usize>,
    /// Record each exchange's request and response headers in its `command_end`
    /// (credentials redacted, values masked as the session's responses are).
    #[serde(default)]
    pub record_headers: bool,
    /// Also record the first this many bytes of each request and response body (masked
    /// likewise). Default 0: no bodies. At most 65536.
    #[serde(default)]
    pub record_body_bytes: usize,
}

/// `https` or `http` to the target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpScheme {
    #[default]
    Https,
    Http,
}

/// A header whose value the gateway holds (`x-api-key`, `Authorization: Bearer …`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HeldHeader {
    /// Header name, e.g. `authorization` or `x-api-key`.
    pub name: String,
    /// Text put before the value, e.g. `"Bearer "`.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Environment variable holding the value.
    #[serde(default)]
    pub value_env: Option<String>,
    /// File holding the value.
    #[serde(default)]
    pub value_file: Option<PathBuf>,
}

impl HeldHeader {
    /// The header's full value (prefix and secret), read from its environment variable or
    /// file.
    pub fn value(&self, base: &Path) -> Result<String, String> {
        let secret = match (&self.value_env, &self.value_file) {
            (Some(var), None) => {
                std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?
            }
            (None, Some(file)) => {
                let path = base.join(file);
                std::fs::read_to_string(&path)
                    .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                    .map_err(|e| format!("{}: {e}", path.display()))?
            }
            (Some(_), Some(_)) => return Err("set `value_env` or `value_file`, not both".into()),
            (None, None) => return Err("set `value_env` or `value_file`".into()),
        };
        Ok(format!("{}{secret}", self.prefix.as_deref().unwrap_or("")))
    }
}

/// `[connections.http.shared_key]`: an Azure Storage account and its key (base64, as the
/// portal shows it).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SharedKeyConfig {
    pub account: String,
    /// Environment variable holding the account key.
    #[serde(default)]
    pub key_env: Option<String>,
    /// File holding the account key.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl SharedKeyConfig {
    /// The account key (base64 text), read from its environment variable or file.
    pub fn key(&self, base: &Path) -> Result<String, String> {
        match (&self.key_env, &self.key_file) {
            (Some(var), None) => {
                std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))
            }
            (None, Some(file)) => {
                let path = base.join(file);
                std::fs::read_to_string(&path)
                    .map(|s| s.trim().to_string())
                    .map_err(|e| format!("{}: {e}", path.display()))
            }
            (Some(_), Some(_)) => Err("set `key_env` or `key_file`, not both".into()),
            (None, None) => Err("set `key_env` or `key_file`".into()),
        }
    }
}
