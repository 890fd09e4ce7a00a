//! Gateway configuration: TOML with unknown keys refused, then `validate()`, which reports
//! every problem with its path.

use std::collections::{BTreeMap, BTreeSet};
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

/// `[identity]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    /// Longest lifetime of an access key minted by `token exchange`.
    #[serde(default = "default_access_key_ttl")]
    pub access_key_max_ttl: String,
    /// SSH public keys that log in as a fixed identity (`[[identity.ssh_keys]]`).
    #[serde(default)]
    pub ssh_keys: Vec<SshKeyConfig>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        // As if the section were present and empty.
        IdentityConfig {
            issuers: Vec::new(),
            access_key_max_ttl: default_access_key_ttl(),
            ssh_keys: Vec::new(),
        }
    }
}

/// An SSH public key mapped to an identity: a client proving it holds the private key is
/// `Identity::"ssh-key/<subject>"` with these groups.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SshKeyConfig {
    /// The public key as in `authorized_keys`: `ssh-ed25519 AAAA... [comment]`.
    pub key: String,
    pub subject: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

impl SshKeyConfig {
    /// `<algorithm> <base64>` without the comment: how keys are compared.
    pub fn normalized(&self) -> Option<String> {
        let mut parts = self.key.split_whitespace();
        let algo = parts.next()?;
        let blob = parts.next()?;
        Some(format!("{algo} {blob}"))
    }
}

fn default_access_key_ttl() -> String {
    "1h".into()
}

/// One trusted token issuer (`[[identity.issuers]]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Name used in principals (`Identity::"<name>/<subject>"`). `builtin` is the gateway's own.
    pub name: String,
    /// Issuer URL (`iss`); discovery at `<issuer>/.well-known/openid-configuration`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Accepted audiences (`aud`); a string or a list.
    #[serde(default, deserialize_with = "one_or_many")]
    pub audience: Vec<String>,
    /// JWKS URL, when the issuer publishes no discovery document.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Claims that carry group or role names.
    #[serde(default = "default_groups_claims")]
    pub groups_claims: Vec<String>,
    /// Claims copied into the identity for audit and policy (e.g. `repository`, `job`).
    #[serde(default)]
    pub keep_claims: Vec<String>,
    /// Claim used as the subject; `sub` by default.
    #[serde(default)]
    pub subject_claim: Option<String>,
    /// Allowed clock skew in seconds for `exp`/`nbf`/`iat`.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
}

fn default_groups_claims() -> Vec<String> {
    vec!["groups".into(), "roles".into()]
}

fn default_leeway() -> u64 {
    30
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
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
    /// Postgres: CA certificates (PEM) the target's certificate must chain to; without it,
    /// `verify-ca` and `verify-full` trust the system's roots (as for Azure Database for
    /// PostgreSQL).
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
    fn problems(&self, errs: &mut Vec<String>) {
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
    fn secret_problems(&self, errs: &mut Vec<String>) {
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

/// `[[masking]]`: detectors and column rules for some connections' results.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MaskingConfig {
    /// Connections (by name) whose results this block masks.
    pub connections: Vec<String>,
    /// Detectors scanned in every text value: `card`, `email`, `ssn`, `iban`, `phone`, `secret`.
    #[serde(default)]
    pub detectors: Vec<String>,
    /// Columns masked whole: `table.column`, `schema.table.column`, `*.column`; `*`/`?` globs.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Groups exempt from this block's rules (not from other blocks').
    #[serde(default)]
    pub unmasked_groups: Vec<String>,
    /// How matches are replaced unless `strategies` says otherwise.
    #[serde(default)]
    pub strategy: MaskStrategy,
    /// Per-detector (or `column`) strategy overrides, e.g. `{ card = "partial" }`.
    #[serde(default)]
    pub strategies: BTreeMap<String, MaskStrategy>,
}

/// How a masked value is replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskStrategy {
    /// `[REDACTED:card]`.
    #[default]
    Redact,
    /// Keep the last four digits (`****-****-****-1234`) or an e-mail's domain.
    Partial,
    /// A stable keyed token (`[card:9f2c41d07a3b55e1]`): same input, same token.
    Hash,
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
            if !matches!(l.protocol, Protocol::Postgres | Protocol::Ssh) {
                errs.push(format!(
                    "{p}.protocol: `{}` is not supported by this build yet",
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
            if c.protocol == Protocol::Postgres && c.user.is_none() {
                errs.push(format!("{p}.user: required for a postgres connection"));
            }
            if c.protocol != Protocol::Postgres {
                if c.sslmode.is_some() {
                    errs.push(format!("{p}.sslmode: only for postgres connections"));
                }
                if c.sslrootcert.is_some() {
                    errs.push(format!("{p}.sslrootcert: only for postgres connections"));
                }
            }
            if let Some(f) = &c.sslrootcert {
                if matches!(c.sslmode(), SslMode::Disable | SslMode::Require) {
                    errs.push(format!(
                        "{p}.sslrootcert: has no effect unless sslmode is verify-ca or verify-full"
                    ));
                }
                if !self.resolve(f).is_file() {
                    errs.push(format!(
                        "{p}.sslrootcert: {} does not exist",
                        self.resolve(f).display()
                    ));
                }
            }
            if c.password_env.is_some() && c.password_file.is_some() {
                errs.push(format!(
                    "{p}: set one of password_env and password_file, not both"
                ));
            }
            self.ssh_problems(c, &p, &mut errs);
            for param in &c.allow_startup_params {
                if matches!(param.as_str(), "user" | "database" | "replication") {
                    errs.push(format!(
                        "{p}.allow_startup_params: `{param}` is set by the gateway and cannot be passed through"
                    ));
                }
            }
        }
        for (i, m) in self.masking.iter().enumerate() {
            let p = format!("masking[{i}]");
            for (j, c) in m.connections.iter().enumerate() {
                if !conns.contains(c) {
                    errs.push(format!("{p}.connections[{j}]: no connection named `{c}`"));
                }
            }
            for e in crate::masking::block_problems(m) {
                errs.push(format!("{p}{e}"));
            }
        }
        errs
    }
}

impl Config {
    /// Problems with the SSH-only fields of connection `c` (path prefix `p`).
    fn ssh_problems(&self, c: &ConnectionConfig, p: &str, errs: &mut Vec<String>) {
        if c.protocol != Protocol::Ssh {
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
            return;
        }
        if c.user.is_none() {
            errs.push(format!("{p}.user: required for an ssh connection"));
        }
        for (i, u) in c.users.iter().enumerate() {
            if u.is_empty() || u.contains('+') {
                errs.push(format!(
                    "{p}.users[{i}]: must be non-empty and contain no `+`"
                ));
            }
        }
        if c.name.contains('+') {
            errs.push(format!(
                "{p}.name: an ssh connection name cannot contain `+`"
            ));
        }
        let password = c.password_env.is_some() || c.password_file.is_some();
        match (&c.private_key_file, password) {
            (Some(_), true) => errs.push(format!(
                "{p}: set one of private_key_file and password_env/password_file, not both"
            )),
            (None, false) => errs.push(format!(
                "{p}: an ssh connection needs a credential: private_key_file, password_env or password_file"
            )),
            _ => {}
        }
        match (&c.known_hosts, &c.host_key_fingerprint) {
            (None, None) => errs.push(format!(
                "{p}: pin the target's host key with known_hosts or host_key_fingerprint"
            )),
            (Some(_), Some(_)) => errs.push(format!(
                "{p}: set one of known_hosts and host_key_fingerprint, not both"
            )),
            (Some(f), None) if !self.resolve(f).is_file() => errs.push(format!(
                "{p}.known_hosts: {} does not exist",
                self.resolve(f).display()
            )),
            (None, Some(fp)) if !fp.starts_with("SHA256:") || fp.len() < 20 => errs.push(format!(
                "{p}.host_key_fingerprint: `{fp}` is not a SHA256:<base64> fingerprint"
            )),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_reject_bad_units() {
        assert_eq!(
            parse_duration("15m").ok(),
            Some(std::time::Duration::from_secs(900))
        );
        assert_eq!(
            parse_duration("2h").ok(),
            Some(std::time::Duration::from_secs(7200))
        );
        assert!(parse_duration("15").is_err());
        assert!(parse_duration("15y").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn masking_blocks_are_validated_with_paths() {
        let text = r#"
[gateway]
state_dir = "s"
policy = "p"
[[connections]]
name = "orders"
protocol = "postgres"
target = "127.0.0.1:5432"
user = "app"
[[masking]]
connections = ["orders"]
detectors = ["card", "email"]
columns = ["customers.ssn", "*.password"]
unmasked_groups = ["dpo"]
strategies = { card = "partial", email = "hash" }
[[masking]]
connections = ["nope", "orders"]
detectors = ["cards"]
columns = ["ssn", "a..b"]
strategies = { email = "hash", bogus = "redact" }
[[masking]]
connections = []
"#;
        let cfg: Config = toml::from_str(text).unwrap();
        assert_eq!(
            cfg.masking[0].strategies.get("card"),
            Some(&MaskStrategy::Partial)
        );
        assert_eq!(cfg.masking[0].strategy, MaskStrategy::Redact);
        let errs = cfg.validate();
        let has = |prefix: &str| errs.iter().any(|e| e.starts_with(prefix));
        assert!(
            !errs.iter().any(|e| e.starts_with("masking[0]")),
            "{errs:?}"
        );
        assert!(
            has("masking[1].connections[0]: no connection named `nope`"),
            "{errs:?}"
        );
        assert!(
            has("masking[1].detectors[0]: unknown detector `cards`"),
            "{errs:?}"
        );
        assert!(has("masking[1].columns[0]:"), "{errs:?}");
        assert!(has("masking[1].columns[1]:"), "{errs:?}");
        assert!(has("masking[1].strategies.email:"), "{errs:?}");
        assert!(has("masking[1].strategies.bogus:"), "{errs:?}");
        assert!(has("masking[2].connections: "), "{errs:?}");
        assert!(has("masking[2]: "), "{errs:?}");
        let bad = "[gateway]\nstate_dir='s'\npolicy='p'\n[[masking]]\nconnections=['x']\nstrategy='blur'\n";
        assert!(toml::from_str::<Config>(bad).is_err());
    }

    #[test]
    fn ssh_connections_need_a_credential_and_a_host_key_pin() {
        let text = r#"
[gateway]
state_dir = "s"
policy = "p"
[[listeners]]
protocol = "ssh"
listen = "127.0.0.1:2222"
[[listeners]]
protocol = "ssh"
listen = "127.0.0.1:2223"
tls = { cert = "c", key = "k" }
[[connections]]
name = "ok"
protocol = "ssh"
target = "h:22"
user = "deploy"
users = ["www"]
password_env = "PATH"
host_key_fingerprint = "SHA256:oPCFnF9MBgb7B8QtjEIy0ipR9vWNlBdELBb5TMNcXFc"
[[connections]]
name = "bad+name"
protocol = "ssh"
target = "h:22"
[[connections]]
name = "both"
protocol = "ssh"
target = "h:22"
user = "u"
private_key_file = "/nonexistent/key"
password_env = "PATH"
known_hosts = "/nonexistent/kh"
host_key_fingerprint = "md5:x"
[[connections]]
name = "pg"
protocol = "postgres"
target = "h:5432"
user = "u"
known_hosts = "kh"
"#;
        let cfg: Config = toml::from_str(text).unwrap();
        let errs = cfg.validate();
        let has = |prefix: &str| errs.iter().any(|e| e.starts_with(prefix));
        assert!(
            !errs.iter().any(|e| e.starts_with("connections[0]")),
            "{errs:?}"
        );
        assert!(!has("listeners[0]"), "{errs:?}");
        assert!(has("listeners[1].tls:"), "{errs:?}");
        assert!(has("connections[1].user: required"), "{errs:?}");
        assert!(has("connections[1].name:"), "{errs:?}");
        assert!(
            has("connections[1]: an ssh connection needs a credential"),
            "{errs:?}"
        );
        assert!(has("connections[1]: pin the target's host key"), "{errs:?}");
        assert!(
            has("connections[2]: set one of private_key_file"),
            "{errs:?}"
        );
        assert!(has("connections[2]: set one of known_hosts"), "{errs:?}");
        assert!(has("connections[3].known_hosts: only for ssh"), "{errs:?}");
        let bad = "[gateway]\nstate_dir='s'\npolicy='p'\n[[connections]]\nname='x'\nprotocol='ssh'\ntarget='h:22'\nhost_key='x'\n";
        assert!(toml::from_str::<Config>(bad).is_err());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = "[gateway]\nstate_dir='s'\npolicy='p'\nbogus=1\n";
        let err = toml::from_str::<Config>(text).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("bogus")));
    }

    fn with_approvals(section: &str) -> Result<Config, String> {
        let text = format!("[gateway]\nstate_dir='s'\npolicy='p'\n{section}");
        toml::from_str::<Config>(&text).map_err(|e| e.to_string())
    }

    #[test]
    fn approvals_section_defaults_and_validation() {
        let cfg = with_approvals("").unwrap();
        assert_eq!(cfg.approvals.pending_ttl, "15m");
        assert_eq!(cfg.approvals.max_window, "8h");
        let mut errs = Vec::new();
        cfg.approvals.problems(&mut errs);
        assert!(errs.is_empty(), "{errs:?}");

        let cfg = with_approvals(
            "[approvals]\napprovers=['dba']\npending_ttl='0s'\nmax_window='8y'\n\
             [[approvals.webhooks]]\nurl='ftp://x'\n\
             [[approvals.webhooks]]\nformat='slack'\n\
             [[approvals.webhooks]]\nurl='https://h'\nsecret_env='PORTCULLIS_TEST_UNSET_SECRET'\n",
        )
        .unwrap();
        assert_eq!(cfg.approvals.webhooks[1].format, WebhookFormat::Slack);
        let mut errs = Vec::new();
        cfg.approvals.problems(&mut errs);
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(errs[0].starts_with("approvals.pending_ttl:"), "{errs:?}");
        assert!(errs[1].starts_with("approvals.max_window:"), "{errs:?}");
        assert!(
            errs[2].starts_with("approvals.webhooks[0].url:"),
            "{errs:?}"
        );
        assert!(
            errs[3].starts_with("approvals.webhooks[1]: set one of"),
            "{errs:?}"
        );
        // The unset secret is a secret problem: serve and config check report it, the
        // verbs that only read the state directory do not need it.
        let mut secrets = Vec::new();
        cfg.approvals.secret_problems(&mut secrets);
        assert_eq!(secrets.len(), 1, "{secrets:?}");
        assert!(
            secrets[0].starts_with("approvals.webhooks[2].secret_env:"),
            "{secrets:?}"
        );
    }

    #[test]
    fn sslmode_defaults_and_validation() {
        let text = r#"
[gateway]
state_dir = "s"
policy = "p"
[[connections]]
name = "a"
protocol = "postgres"
target = "h:5432"
user = "u"
[[connections]]
name = "b"
protocol = "postgres"
target = "h:5432"
user = "u"
sslmode = "require"
sslrootcert = "missing.pem"
[[connections]]
name = "c"
protocol = "ssh"
target = "h:22"
user = "u"
sslmode = "verify-full"
"#;
        let cfg: Config = toml::from_str(text).unwrap();
        assert_eq!(cfg.connections[0].sslmode(), SslMode::Disable);
        let mut with_ca = cfg.connections[1].clone();
        with_ca.sslmode = None;
        assert_eq!(with_ca.sslmode(), SslMode::VerifyFull);
        let errs = cfg.validate();
        let has = |prefix: &str| errs.iter().any(|e| e.starts_with(prefix));
        assert!(has("connections[1].sslrootcert: has no effect"), "{errs:?}");
        assert!(
            has("connections[1].sslrootcert: ")
                && errs
                    .iter()
                    .any(|e| e.contains("missing.pem does not exist")),
            "{errs:?}"
        );
        assert!(has("connections[2].sslmode: only for postgres"), "{errs:?}");
        assert!(!has("connections[0]"), "{errs:?}");
        let bad = text.replace("\"require\"", "\"prefer\"");
        assert!(toml::from_str::<Config>(&bad).is_err());
    }

    #[test]
    fn approvals_unknown_keys_are_refused() {
        let err = with_approvals("[approvals]\nttl='1m'\n").err();
        assert!(err.is_some_and(|e| e.contains("ttl")));
        let err = with_approvals("[[approvals.webhooks]]\nurl='http://x'\nheaders=1\n").err();
        assert!(err.is_some_and(|e| e.contains("headers")));
    }
}
