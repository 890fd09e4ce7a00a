//! `[[connections]]`: targets and the credentials the gateway holds for them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Protocol;

/// `[[connections]]`: a target and the credential the gateway holds for it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// What clients name (a Postgres client's `dbname`).
    pub name: String,
    pub protocol: Protocol,
    /// `host:port` of the target.
    pub target: String,
    /// Database on the target.
    #[serde(default)]
    pub database: Option<String>,
    /// User the gateway logs in as.
    #[serde(default)]
    pub user: Option<String>,
    /// Environment variable holding the target password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the target password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Extra startup parameters clients may pass through beyond the built-in allow-list.
    #[serde(default)]
    pub allow_startup_params: Vec<String>,
    /// Pass the client's `options` startup parameter to the target.
    #[serde(default)]
    pub allow_options: bool,
    /// Postgres: TLS to the target, as libpq's `sslmode`: `disable`, `require` (encrypted,
    /// the certificate not checked), `verify-ca` (it chains to a trusted CA), `verify-full`
    /// (and names the target's host). Default: `verify-full` when `sslrootcert` is set, else
    /// `disable`.
    #[serde(default)]
    pub sslmode: Option<SslMode>,
    /// Postgres and TDS: CA certificates (PEM) the target's certificate must chain to;
    /// without it, verification trusts the system's roots (as for Azure Database for
    /// PostgreSQL and Azure SQL).
    #[serde(default)]
    pub sslrootcert: Option<PathBuf>,
    /// SSH: further target users a client may choose with `<user>+<connection>@`; `user`
    /// is the default and always allowed.
    #[serde(default)]
    pub users: Vec<String>,
    /// SSH: the private key (OpenSSH format) the gateway logs in to the target with.
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    /// SSH: a known_hosts file the target's host key must be listed in.
    #[serde(default)]
    pub known_hosts: Option<PathBuf>,
    /// SSH: the target's host key fingerprint, `SHA256:<base64>` as `ssh-keygen -l` prints it.
    #[serde(default)]
    pub host_key_fingerprint: Option<String>,
    /// SSH: environment variables passed to the target beyond `LANG`, `LC_*` and `TERM`.
    #[serde(default)]
    pub allow_env: Vec<String>,
    /// TDS: encryption to the target, as the SQL Server drivers' `Encrypt` names it:
    /// `mandatory` (default: TLS negotiated in PRELOGIN, the certificate verified),
    /// `strict` (TDS 8.0: TLS before any TDS byte, certificate verified), `off` (plain TCP;
    /// for loopback targets only).
    #[serde(default)]
    pub encrypt: Option<TdsEncrypt>,
    /// TDS: log in to the target with an access token the gateway obtains itself (OAuth 2.0
    /// client credentials, e.g. an Entra ID app registration for Azure SQL) instead of a SQL
    /// login.
    #[serde(default)]
    pub oauth: Option<OAuthClientConfig>,
    /// HTTP: scheme, host names, a held header and body limits (`[connections.http]`).
    #[serde(default)]
    pub http: Option<super::HttpSettings>,
    /// Kubernetes: the held token or client certificate, impersonation, host names
    /// (`[connections.kube]`).
    #[serde(default)]
    pub kube: Option<super::KubeSettings>,
}

/// `[connections.oauth]`: the OAuth 2.0 client-credentials grant the gateway uses to obtain
/// the target's access token.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OAuthClientConfig {
    /// Entra ID tenant (id or domain): the token endpoint is
    /// `https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token`.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Any OAuth 2.0 token endpoint (instead of `tenant`).
    #[serde(default)]
    pub token_url: Option<String>,
    pub client_id: String,
    /// Environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// File holding the client secret.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// `scope` of the request; with `tenant` it defaults to Azure SQL's
    /// `https://database.windows.net/.default`.
    #[serde(default)]
    pub scope: Option<String>,
    /// `resource` of the request (RFC 8707), for issuers that take one.
    #[serde(default)]
    pub resource: Option<String>,
}

/// The scope Azure SQL accepts tokens for.
pub const AZURE_SQL_SCOPE: &str = "https://database.windows.net/.default";

impl OAuthClientConfig {
    /// The token endpoint.
    pub fn endpoint(&self) -> Result<String, String> {
        match (&self.tenant, &self.token_url) {
            (Some(t), None) => Ok(format!(
                "https://login.microsoftonline.com/{t}/oauth2/v2.0/token"
            )),
            (None, Some(u)) => Ok(u.clone()),
            (Some(_), Some(_)) => Err("set `tenant` or `token_url`, not both".into()),
            (None, None) => Err("set `tenant` (Entra ID) or `token_url`".into()),
        }
    }

    /// Problems with these settings, each prefixed with `p` (the connection's path): the
    /// token endpoint (https, since the client secret is sent to it, unless on this
    /// machine) and exactly one secret source, a file that exists. `resolve` maps a
    /// configured path to the file it names.
    pub fn problems(&self, p: &str, resolve: impl Fn(&Path) -> PathBuf) -> Vec<String> {
        let mut errs = Vec::new();
        match self.endpoint() {
            Ok(url) if !url.starts_with("https://") && !crate::util::is_loopback_url(&url) => {
                errs.push(format!(
                    "{p}.oauth.token_url: must be https (the client secret is sent to it); \
                     http is allowed for loopback endpoints only"
                ));
            }
            Ok(_) => {}
            Err(e) => errs.push(format!("{p}.oauth: {e}")),
        }
        match (&self.client_secret_env, &self.client_secret_file) {
            (Some(_), Some(_)) | (None, None) => errs.push(format!(
                "{p}.oauth: set client_secret_env or client_secret_file"
            )),
            (None, Some(f)) if !resolve(f).is_file() => errs.push(format!(
                "{p}.oauth.client_secret_file: {} does not exist",
                resolve(f).display()
            )),
            _ => {}
        }
        errs
    }

    /// The scope to ask for, if any.
    pub fn scope(&self) -> Option<&str> {
        self.scope
            .as_deref()
            .or(self.tenant.as_ref().map(|_| AZURE_SQL_SCOPE))
    }

    /// The client secret, read from its environment variable or file.
    pub fn secret(&self, base: &Path) -> Result<String, String> {
        match (&self.client_secret_env, &self.client_secret_file) {
            (Some(var), None) => {
                std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))
            }
            (None, Some(file)) => {
                let path = base.join(file);
                std::fs::read_to_string(&path)
                    .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                    .map_err(|e| format!("{}: {e}", path.display()))
            }
            (Some(_), Some(_)) => {
                Err("set `client_secret_env` or `client_secret_file`, not both".into())
            }
            (None, None) => Err("set `client_secret_env` or `client_secret_file`".into()),
        }
    }
}

/// TLS from the gateway to a TDS target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TdsEncrypt {
    /// Plain TCP.
    Off,
    /// TLS negotiated in PRELOGIN (TDS 7.x), certificate verified.
    #[default]
    Mandatory,
    /// TDS 8.0: TLS first, certificate verified.
    Strict,
}

/// TLS from the gateway to a Postgres target (libpq's `sslmode` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS, any certificate.
    Require,
    /// TLS, a certificate that chains to a trusted CA, whatever name it is for.
    VerifyCa,
    /// TLS, a certificate that chains to a trusted CA and names the target's host.
    VerifyFull,
}

impl ConnectionConfig {
    /// The TLS mode in force: the configured one, else `verify-full` with a CA file, else
    /// `disable`.
    pub fn sslmode(&self) -> SslMode {
        match (self.sslmode, &self.sslrootcert) {
            (Some(m), _) => m,
            (None, Some(_)) => SslMode::VerifyFull,
            (None, None) => SslMode::Disable,
        }
    }

    /// Read the held password from its configured source.
    pub fn password(&self, base: &Path) -> Result<Option<String>, String> {
        if let Some(var) = &self.password_env {
            return std::env::var(var)
                .map(Some)
                .map_err(|_| format!("environment variable {var} is not set"));
        }
        if let Some(file) = &self.password_file {
            let path = base.join(file);
            return std::fs::read_to_string(&path)
                .map(|s| Some(s.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|e| format!("{}: {e}", path.display()));
        }
        Ok(None)
    }
}
