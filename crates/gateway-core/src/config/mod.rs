//! Gateway configuration: TOML with unknown keys refused, then `validate()`, which reports
//! every problem with its path.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub gateway: GatewayConfig,
    #[serde(default)]
    pub identity: IdentityConfig,
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub connections: Vec<ConnectionConfig>,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub approvals: ApprovalsConfig,
    /// `[[masking]]` blocks; where several apply to one connection their rules union.
    #[serde(default)]
    pub masking: Vec<MaskingConfig>,
    /// Directory the config file lives in; relative paths resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[gateway]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Embedded store, recordings and the built-in issuer's key.
    pub state_dir: PathBuf,
    /// Admin listener: health, metrics, built-in issuer discovery and JWKS, admin API.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
    /// Cedar policy file.
    pub policy: PathBuf,
    /// URL the built-in issuer puts in `iss`; defaults to `http://<admin_listen>`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Threads that run sessions; defaults to one per core.
    #[serde(default)]
    pub worker_threads: Option<usize>,
}

fn default_admin_listen() -> String {
    "127.0.0.1:8080".into()
}

/// `[[listeners]]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub protocol: Protocol,
    pub listen: String,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// Certificate and key files for a TLS listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Refuse clients that do not negotiate TLS (the token would cross the wire in clear).
    #[serde(default = "default_true")]
    pub required: bool,
}

fn default_true() -> bool {
    true
}

/// Wire protocols the gateway speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Postgres,
    Tds,
    Ssh,
    Kube,
    Http,
}

impl Protocol {
    /// Lower-case name as used in config and policy.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Postgres => "postgres",
            Protocol::Tds => "tds",
            Protocol::Ssh => "ssh",
            Protocol::Kube => "kube",
            Protocol::Http => "http",
        }
    }
}

/// `[audit]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// `process` (default): an event is committed before the command runs and survives the
    /// gateway being killed. `fsync`: also flushed to disk, surviving power loss.
    #[serde(default)]
    pub durability: Durability,
    /// Also append every event as one JSON line to this file.
    #[serde(default)]
    pub jsonl: Option<PathBuf>,
    /// Where the signed chain heads (anchors) go: keep it off the state directory's disk,
    /// where whoever could cut the chain could not cut it too. Default
    /// `<state_dir>/audit-anchors.jsonl`.
    #[serde(default)]
    pub anchors: Option<PathBuf>,
    /// How often the chain's head is signed when it has moved (and always at shutdown).
    #[serde(default = "default_anchor_every")]
    pub anchor_every: String,
}

fn default_anchor_every() -> String {
    "60s".to_string()
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            durability: Durability::Process,
            jsonl: None,
            anchors: None,
            anchor_every: default_anchor_every(),
        }
    }
}

/// How durable an audit event is before the command it records runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    #[default]
    Process,
    Fsync,
}

/// Parse a duration like `90s`, `15m`, `2h`, `1d`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{s}`: missing unit (s, m, h, d)"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}`: expected a number followed by s, m, h or d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use s, m, h or d)")),
    };
    Ok(std::time::Duration::from_secs(secs))
}

impl Config {
    /// Load and parse a config file (unknown keys are errors). Call `validate` next.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut cfg: Config =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        cfg.base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(cfg)
    }

    /// Resolve a path from the config against the config file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// Where the audit chain's signed heads go, resolved.
    pub fn anchors_path(&self) -> PathBuf {
        match &self.audit.anchors {
            Some(p) => self.resolve(p),
            None => self
                .state_dir()
                .join(crate::audit::anchor::DEFAULT_ANCHORS_FILE),
        }
    }

    /// The state directory, resolved.
    pub fn state_dir(&self) -> PathBuf {
        self.resolve(&self.gateway.state_dir)
    }

    /// The URL the built-in issuer signs as.
    pub fn builtin_issuer_url(&self) -> String {
        self.gateway
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.gateway.admin_listen))
            .trim_end_matches('/')
            .to_string()
    }

    /// Find a connection by the name a client uses.
    pub fn connection(&self, name: &str) -> Option<&ConnectionConfig> {
        self.connections.iter().find(|c| c.name == name)
    }

    /// Every problem with the secrets the gateway holds for its targets and webhooks
    /// (passwords from the environment or files, SSH private keys): what `serve` needs and
    /// `config check` reports. Verbs that only read the state directory (audit, sessions,
    /// replay, policy test, token) do not need them.
    pub fn secret_problems(&self) -> Vec<String> {
        let mut errs = Vec::new();
        for (i, c) in self.connections.iter().enumerate() {
            let p = format!("connections[{i}]");
            if let Err(e) = c.password(&self.base_dir) {
                errs.push(format!("{p}: {e}"));
            }
            if let Some(f) = &c.private_key_file
                && !self.resolve(f).is_file()
            {
                errs.push(format!(
                    "{p}.private_key_file: {} does not exist",
                    self.resolve(f).display()
                ));
            }
            if let Some(h) = c.http.as_ref().and_then(|h| h.header.as_ref())
                && let Err(e) = h.value(&self.base_dir)
            {
                errs.push(format!("{p}.http.header: {e}"));
            }
            if let Some(k) = c.http.as_ref().and_then(|h| h.shared_key.as_ref())
                && let Err(e) = k.key(&self.base_dir)
            {
                errs.push(format!("{p}.http.shared_key: {e}"));
            }
        }
        self.approvals.secret_problems(&mut errs);
        errs
    }

    /// Every problem in the configuration, each with its path. Empty means valid. Secrets
    /// are checked separately, by [`secret_problems`](Self::secret_problems).
    pub fn validate(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if self
            .gateway
            .admin_listen
            .parse::<std::net::SocketAddr>()
            .is_err()
        {
            errs.push(format!(
                "gateway.admin_listen: `{}` is not an address:port",
                self.gateway.admin_listen
            ));
        }
        if !self.resolve(&self.gateway.policy).is_file() {
            errs.push(format!(
                "gateway.policy: {} does not exist",
                self.resolve(&self.gateway.policy).display()
            ));
        }
        if self.gateway.worker_threads == Some(0) {
            errs.push("gateway.worker_threads: must be at least 1".to_string());
        }
        if let Err(e) = parse_duration(&self.identity.access_key_max_ttl) {
            errs.push(format!("identity.access_key_max_ttl: {e}"));
        }
        match parse_duration(&self.audit.anchor_every) {
            Err(e) => errs.push(format!("audit.anchor_every: {e}")),
            Ok(d) if d.is_zero() => errs.push("audit.anchor_every: must be longer than 0s".into()),
            Ok(_) => {}
        }
        let mut keys = BTreeSet::new();
        for (i, k) in self.identity.ssh_keys.iter().enumerate() {
            let p = format!("identity.ssh_keys[{i}]");
            match k.normalized() {
                Some(n) if n.starts_with("ssh-") || n.starts_with("ecdsa-") => {
                    if !keys.insert(n) {
                        errs.push(format!("{p}.key: the same key is mapped twice"));
                    }
                }
                _ => errs.push(format!(
                    "{p}.key: expected `<algorithm> <base64>` as in authorized_keys"
                )),
            }
            if k.subject.is_empty() || k.subject.contains('/') {
                errs.push(format!("{p}.subject: must be non-empty and contain no `/`"));
            }
        }
        self.approvals.problems(&mut errs);
        let mut names = BTreeSet::new();
        for (i, iss) in self.identity.issuers.iter().enumerate() {
            let p = format!("identity.issuers[{i}]");
            if !names.insert(iss.name.clone()) {
                errs.push(format!("{p}.name: `{}` is defined twice", iss.name));
            }
            if iss.name == crate::identity::SSH_KEY_ISSUER {
                errs.push(format!(
                    "{p}.name: `{}` is reserved for identities from identity.ssh_keys",
                    iss.name
                ));
            }
            if iss.name.is_empty() || iss.name.contains('/') {
                errs.push(format!("{p}.name: must be non-empty and contain no `/`"));
            }
            if iss.name == "builtin" {
                if iss.issuer.is_some() || iss.jwks_uri.is_some() {
                    errs.push(format!(
                        "{p}: the builtin issuer takes no `issuer` or `jwks_uri`"
                    ));
                }
                continue;
            }
            match &iss.issuer {
                None => errs.push(format!("{p}.issuer: required for an external issuer")),
                Some(u) if !(u.starts_with("https://") || u.starts_with("http://")) => {
                    errs.push(format!("{p}.issuer: `{u}` is not an http(s) URL"))
                }
                _ => {}
            }
            if iss.audience.is_empty() {
                errs.push(format!(
                    "{p}.audience: required (tokens for other audiences must not be accepted)"
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for (i, l) in self.listeners.iter().enumerate() {
            let p = format!("listeners[{i}]");
            if l.listen.parse::<std::net::SocketAddr>().is_err() {
                errs.push(format!("{p}.listen: `{}` is not an address:port", l.listen));
            }
            if !seen.insert(l.listen.clone()) {
                errs.push(format!("{p}.listen: `{}` is used twice", l.listen));
            }
            if !matches!(
                l.protocol,
                Protocol::Postgres
                    | Protocol::Ssh
                    | Protocol::Tds
                    | Protocol::Http
                    | Protocol::Kube
            ) {
                errs.push(format!(
                    "{p}.protocol: `{}` is not supported by this build yet",
                    l.protocol.as_str()
                ));
            }
            if matches!(l.protocol, Protocol::Http | Protocol::Kube)
                && l.tls.is_none()
                && !l
                    .listen
                    .parse::<std::net::SocketAddr>()
                    .is_ok_and(|a| a.ip().is_loopback())
            {
                errs.push(format!(
                    "{p}.tls: an {} listener off loopback needs tls (callers send their \
                     tokens in it)",
                    l.protocol.as_str()
                ));
            }
            if l.protocol == Protocol::Ssh && l.tls.is_some() {
                errs.push(format!(
                    "{p}.tls: an ssh listener encrypts with SSH itself and takes no tls"
                ));
            }
            if let Some(tls) = &l.tls {
                for (k, f) in [("cert", &tls.cert), ("key", &tls.key)] {
                    if !self.resolve(f).is_file() {
                        errs.push(format!(
                            "{p}.tls.{k}: {} does not exist",
                            self.resolve(f).display()
                        ));
                    }
                }
            }
        }
        let mut conns = BTreeSet::new();
        for (i, c) in self.connections.iter().enumerate() {
            let p = format!("connections[{i}]");
            if !conns.insert(c.name.clone()) {
                errs.push(format!("{p}.name: `{}` is defined twice", c.name));
            }
            if c.name.is_empty() {
                errs.push(format!("{p}.name: must not be empty"));
            }
            if c.target
                .rsplit_once(':')
                .and_then(|(_, port)| port.parse::<u16>().ok())
                .is_none()
            {
                errs.push(format!("{p}.target: `{}` is not host:port", c.target));
            }
            if c.protocol != Protocol::Postgres {
                if c.sslmode.is_some() {
                    errs.push(format!("{p}.sslmode: only for postgres connections"));
                }
                if c.sslrootcert.is_some()
                    && !matches!(c.protocol, Protocol::Tds | Protocol::Http | Protocol::Kube)
                {
                    errs.push(format!(
                        "{p}.sslrootcert: only for postgres, tds, http and kube connections"
                    ));
                }
            }
            if !matches!(c.protocol, Protocol::Tds | Protocol::Http | Protocol::Kube)
                && c.oauth.is_some()
            {
                errs.push(format!(
                    "{p}.oauth: only for tds, http and kube connections"
                ));
            }
            if c.protocol != Protocol::Kube && c.kube.is_some() {
                errs.push(format!("{p}.kube: only for kube connections"));
            }
            if c.protocol != Protocol::Http && c.http.is_some() {
                errs.push(format!("{p}.http: only for http connections"));
            }
            if c.protocol != Protocol::Tds && c.encrypt.is_some() {
                errs.push(format!("{p}.encrypt: only for tds connections"));
            }
            if c.password_env.is_some() && c.password_file.is_some() {
                errs.push(format!(
                    "{p}: set one of password_env and password_file, not both"
                ));
            }
            self.ssh_problems(c, &p, &mut errs);
        }
        for (i, m) in self.masking.iter().enumerate() {
            let p = format!("masking[{i}]");
            for (j, c) in m.connections.iter().enumerate() {
                if !conns.contains(c) {
                    errs.push(format!("{p}.connections[{j}]: no connection named `{c}`"));
                }
            }
        }
        errs
    }
}

impl Config {
    /// SSH-only fields set on a connection of another protocol (path prefix `p`).
    fn ssh_problems(&self, c: &ConnectionConfig, p: &str, errs: &mut Vec<String>) {
        if c.protocol == Protocol::Ssh {
            return;
        }
        for (key, set) in [
            ("users", !c.users.is_empty()),
            ("private_key_file", c.private_key_file.is_some()),
            ("known_hosts", c.known_hosts.is_some()),
            ("host_key_fingerprint", c.host_key_fingerprint.is_some()),
            ("allow_env", !c.allow_env.is_empty()),
        ] {
            if set {
                errs.push(format!("{p}.{key}: only for ssh connections"));
            }
        }
    }
}

mod approvals;
mod connection;
mod http;
mod identity;
mod kube;
mod masking;

pub use approvals::*;
pub use connection::*;
pub use http::*;
pub use identity::*;
pub use kube::*;
pub use masking::*;

#[cfg(test)]
mod tests;
