//! `[connections.kube]`: what a Kubernetes API connection needs beyond its target address.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `[connections.kube]`: the credential the gateway holds for an API server, and whether it
/// acts as the caller there.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubeSettings {
    /// Environment variable holding the bearer token the gateway presents (a service
    /// account's token, say).
    #[serde(default)]
    pub token_env: Option<String>,
    /// File holding that token (read when the connection is first used, and again whenever
    /// it changes: a projected service-account token is rotated in place).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Client certificate (PEM) the gateway presents instead of, or besides, a token.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Send `Impersonate-User` (the caller's subject) and `Impersonate-Group` (their
    /// groups), so the cluster's RBAC and audit see the caller. The held credential must be
    /// allowed to impersonate.
    #[serde(default)]
    pub impersonate: bool,
    /// The TLS server name and `Host` sent to the API server; default: the target's host.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Host names (the client's `Host`) that select this connection, besides the path
    /// prefix `/c/<name>/`.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Largest response masked whole (bytes); a larger one is refused. Default 8 MiB.
    #[serde(default)]
    pub max_masked_body: Option<usize>,
}

impl KubeSettings {
    /// The held bearer token, if the connection holds one, read from its environment
    /// variable or file.
    pub fn token(&self, base: &Path) -> Result<Option<String>, String> {
        match (&self.token_env, &self.token_file) {
            (Some(var), None) => std::env::var(var)
                .map(|t| Some(t.trim().to_string()))
                .map_err(|_| format!("environment variable {var} is not set")),
            (None, Some(file)) => {
                let path = base.join(file);
                std::fs::read_to_string(&path)
                    .map(|s| Some(s.trim().to_string()))
                    .map_err(|e| format!("{}: {e}", path.display()))
            }
            (Some(_), Some(_)) => Err("set `token_env` or `token_file`, not both".into()),
            (None, None) => Ok(None),
        }
    }
}
