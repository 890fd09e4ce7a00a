//! `[identity]`: the issuers trusted, SSH keys mapped to identities, access keys.

use serde::{Deserialize, Serialize};

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
