//! Verifies presented credentials into identities.
//!
//! A credential is a JWT from a configured issuer or an access key from `token exchange`
//! (`pcx_…`). For a JWT, nothing in it is trusted before its signature checks out: the
//! unverified `iss` only picks which configured issuer's keys to try, and the header `alg`
//! must be an asymmetric algorithm that fits the chosen key.
//!
//! Issuers are matched by exact `iss`. Entra ID v1 tokens carry
//! `iss = https://sts.windows.net/<tenant>/` (trailing slash included) while v2 tokens carry
//! `https://login.microsoftonline.com/<tenant>/v2.0`; configure the form your tokens carry
//! (set `jwks_uri` if its discovery document names a different issuer). No prefix or
//! tenant-wildcard matching is done.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::builtin::{BuiltinIssuer, DEFAULT_AUDIENCE};
use super::jwks::{IssuerKeys, KeySet, VerifyKey};
use super::{AuthMethod, Identity, IdentityError, access_key};
use crate::config::{IdentityConfig, parse_duration};
use crate::error::Error;
use crate::store::Store;

/// Longest credential accepted; anything longer is refused before parsing.
pub const MAX_CREDENTIAL_LEN: usize = 16 * 1024;
/// Claims always kept in the identity when present (Azure and OAuth client identifiers).
const ALWAYS_KEPT: &[&str] = &["azp", "appid", "client_id", "tid", "oid"];
/// Longest piece of unverified token text echoed back in an error.
const MAX_ECHO: usize = 128;

/// One configured issuer, ready to verify.
#[derive(Debug)]
struct TrustedIssuer {
    name: String,
    issuer_url: String,
    audiences: Vec<String>,
    groups_claims: Vec<String>,
    keep_claims: Vec<String>,
    subject_claim: String,
    leeway: i64,
    keys: IssuerKeys,
}

/// Verifies JWTs from the configured issuers and access keys from the store.
pub struct Verifier {
    issuers: Vec<TrustedIssuer>,
    /// `iss` value -> index into `issuers`.
    by_iss: HashMap<String, usize>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) access_key_max_ttl: Duration,
    /// `<algorithm> <base64>` -> (subject, groups), from `[[identity.ssh_keys]]`.
    ssh_keys: HashMap<String, (String, Vec<String>)>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuers", &self.issuers)
            .finish_non_exhaustive()
    }
}

/// Longest a login waits for its credential to be verified.
pub const VERIFY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Verifier {
    /// Build a verifier for the configured issuers. Nothing is fetched here: external
    /// issuers' keys are fetched on first use, so the gateway starts while they are down.
    /// The issuer named `builtin` needs `builtin`; its audience defaults to `portcullis`.
    pub fn new(
        cfg: &IdentityConfig,
        builtin: Option<Arc<BuiltinIssuer>>,
        store: Arc<dyn Store>,
    ) -> Result<Verifier, Error> {
        let access_key_max_ttl = parse_duration(&cfg.access_key_max_ttl)
            .map_err(|e| Error::Config(format!("identity.access_key_max_ttl: {e}")))?;
        let mut http = None;
        let mut issuers = Vec::new();
        let mut by_iss = HashMap::new();
        for (i, ic) in cfg.issuers.iter().enumerate() {
            let path = format!("identity.issuers[{i}]");
            let (issuer_url, audiences, keys) = if ic.name == "builtin" {
                let b = builtin.as_ref().ok_or_else(|| {
                    Error::Config(format!("{path}: the built-in issuer is not available"))
                })?;
                let set = KeySet::from_jwks(&b.jwks_json()).map_err(Error::Config)?;
                let audiences = if ic.audience.is_empty() {
                    vec![DEFAULT_AUDIENCE.to_string()]
                } else {
                    ic.audience.clone()
                };
                let keys = IssuerKeys::fixed(&ic.name, b.issuer_url(), set);
                (b.issuer_url().to_string(), audiences, keys)
            } else {
                let url = ic.issuer.clone().ok_or_else(|| {
                    Error::Config(format!("{path}.issuer: required for an external issuer"))
                })?;
                if ic.audience.is_empty() {
                    return Err(Error::Config(format!(
                        "{path}.audience: required (tokens for other audiences must not be accepted)"
                    )));
                }
                let client = match &http {
                    Some(c) => c,
                    None => http.insert(super::jwks::http_client().map_err(Error::Config)?),
                };
                let keys = IssuerKeys::remote(&ic.name, &url, ic.jwks_uri.clone(), client.clone());
                (url, ic.audience.clone(), keys)
            };
            if by_iss.insert(issuer_url.clone(), issuers.len()).is_some() {
                return Err(Error::Config(format!(
                    "{path}.issuer: `{issuer_url}` is configured twice"
                )));
            }
            issuers.push(TrustedIssuer {
                name: ic.name.clone(),
                issuer_url,
                audiences,
                groups_claims: ic.groups_claims.clone(),
                keep_claims: ic.keep_claims.clone(),
                subject_claim: ic.subject_claim.clone().unwrap_or_else(|| "sub".into()),
                leeway: i64::try_from(ic.leeway_secs).unwrap_or(i64::MAX),
                keys,
            });
        }
        let ssh_keys = cfg
            .ssh_keys
            .iter()
            .filter_map(|k| Some((k.normalized()?, (k.subject.clone(), k.groups.clone()))))
            .collect();
        Ok(Verifier {
            issuers,
            by_iss,
            store,
            access_key_max_ttl,
            ssh_keys,
        })
    }

    /// Verify a credential (a JWT or an access key) into an identity.
    /// [`verify`](Self::verify) within [`VERIFY_TIMEOUT`] (issuer key fetches can hang): a
    /// credential that cannot be checked in time is refused as its issuer being unavailable.
    pub async fn verify_in_time(&self, credential: &str) -> Result<Identity, IdentityError> {
        tokio::time::timeout(VERIFY_TIMEOUT, self.verify(credential))
            .await
            .unwrap_or_else(|_| {
                Err(IdentityError::IssuerUnavailable {
                    issuer: "token verification".into(),
                    reason: "timed out".into(),
                })
            })
    }

    pub async fn verify(&self, credential: &str) -> Result<Identity, IdentityError> {
        let credential = credential.trim();
        if credential.is_empty() {
            return Err(IdentityError::Missing);
        }
        if credential.len() > MAX_CREDENTIAL_LEN {
            return Err(IdentityError::Malformed(format!(
                "longer than {MAX_CREDENTIAL_LEN} bytes"
            )));
        }
        if credential.starts_with(access_key::ACCESS_KEY_PREFIX) {
            return access_key::verify_access_key(self, credential);
        }
        self.verify_jwt(credential).await
    }

    /// Whether the credential a live session was verified with still holds: an access key
    /// revoked, expired or whose issuer left the configuration no longer does. One indexed
    /// store lookup for access keys; nothing for other credentials.
    pub fn still_valid(&self, identity: &Identity) -> Result<(), IdentityError> {
        access_key::still_valid(self, identity)
    }

    /// The identity an SSH public key is mapped to. `key` is `<algorithm> <base64>` of a key
    /// whose possession the SSH layer has verified (a signature over the session).
    pub fn verify_ssh_key(&self, key: &str) -> Option<Identity> {
        let (subject, groups) = self.ssh_keys.get(key)?;
        Some(Identity::verified(
            super::SSH_KEY_ISSUER.to_string(),
            subject.clone(),
            None,
            groups.clone(),
            Default::default(),
            super::AuthMethod::SshKey,
            i64::MAX,
        ))
    }

    /// Shorten every issuer's refetch interval (tests exercise rotation without waiting).
    #[cfg(test)]
    pub(crate) fn set_refetch_interval(&mut self, interval: Duration) {
        for i in &mut self.issuers {
            i.keys.set_refetch_interval(interval);
        }
    }

    /// Whether an issuer with this configured name exists (access keys of a removed issuer
    /// stop working).
    pub(crate) fn has_issuer(&self, name: &str) -> bool {
        self.issuers.iter().any(|i| i.name == name)
    }

    /// Verify a JWT only (access keys are refused).
    pub async fn verify_jwt(&self, token: &str) -> Result<Identity, IdentityError> {
        let token = token.trim();
        if token.len() > MAX_CREDENTIAL_LEN {
            return Err(IdentityError::Malformed(format!(
                "longer than {MAX_CREDENTIAL_LEN} bytes"
            )));
        }
        let parts: Vec<&str> = token.split('.').collect();
        let [header_b64, payload_b64, signature_b64] = parts[..] else {
            return Err(IdentityError::Malformed(if parts.len() == 5 {
                "encrypted tokens (JWE) are not supported".into()
            } else {
                "not a JWT".into()
            }));
        };
        let header = decode_json_object(header_b64, "header")?;
        let alg = parse_alg(&header)?;
        if header.contains_key("crit") {
            return Err(IdentityError::Malformed(
                "critical header extensions are not supported".into(),
            ));
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.as_str()),
            Some(_) => return Err(IdentityError::Malformed("`kid` is not a string".into())),
        };
        // Unverified: used only to choose which issuer's keys to check the signature with.
        let payload = decode_json_object(payload_b64, "payload")?;
        let iss = match payload.get("iss") {
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(IdentityError::Malformed("`iss` is not a string".into())),
            None => return Err(IdentityError::MissingClaim("iss".into())),
        };
        let issuer = self
            .by_iss
            .get(iss)
            .and_then(|i| self.issuers.get(*i))
            .ok_or_else(|| IdentityError::UnknownIssuer(echo(iss)))?;

        let key = select_key(issuer, kid, alg).await?;
        if !key.accepts(alg) {
            return Err(IdentityError::BadAlgorithm(
                super::jwks::alg_name(alg).to_string(),
            ));
        }
        let signed = &token[..header_b64.len() + 1 + payload_b64.len()];
        match jsonwebtoken::crypto::verify(signature_b64, signed.as_bytes(), &key.key, alg) {
            Ok(true) => {}
            Ok(false) => return Err(IdentityError::BadSignature),
            Err(e) => match e.kind() {
                jsonwebtoken::errors::ErrorKind::Base64(_) => {
                    return Err(IdentityError::Malformed(
                        "signature is not base64url".into(),
                    ));
                }
                _ => return Err(IdentityError::BadSignature),
            },
        }
        identity_from_claims(issuer, &payload)
    }
}

/// The key to check a token with: by `kid` (refetching the issuer's keys once, rate-limited,
/// when the `kid` is unknown), or the only fitting key when the token names none.
async fn select_key(
    issuer: &TrustedIssuer,
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<VerifyKey, IdentityError> {
    let find = |set: &KeySet| match kid {
        Some(k) => set.by_kid(k).cloned(),
        None => set.single_for(alg).cloned(),
    };
    let set = issuer.keys.get().await?;
    if let Some(k) = find(&set) {
        return Ok(k);
    }
    let set = issuer.keys.refresh_for_unknown_kid(&set).await?;
    find(&set).ok_or_else(|| IdentityError::UnknownKey(kid.map_or_else(|| "(no kid)".into(), echo)))
}

/// Only asymmetric algorithms: `none` and HMAC (which would let a public key act as a
/// shared secret) are refused outright.
fn parse_alg(header: &Map<String, Value>) -> Result<Algorithm, IdentityError> {
    let name = match header.get("alg") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(IdentityError::Malformed("`alg` is not a string".into())),
        None => return Err(IdentityError::Malformed("no `alg` in header".into())),
    };
    let alg: Algorithm = name
        .parse()
        .map_err(|_| IdentityError::BadAlgorithm(echo(name)))?;
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            Err(IdentityError::BadAlgorithm(name.to_string()))
        }
        _ => Ok(alg),
    }
}

fn decode_json_object(part: &str, what: &str) -> Result<Map<String, Value>, IdentityError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| IdentityError::Malformed(format!("{what} is not base64url")))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(IdentityError::Malformed(format!(
            "{what} is not a JSON object"
        ))),
    }
}

/// Unverified text shown back to a client, bounded.
fn echo(s: &str) -> String {
    if s.len() <= MAX_ECHO {
        return s.to_string();
    }
    let mut end = MAX_ECHO;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A NumericDate claim: a JSON number, fractions dropped.
fn numeric_date(payload: &Map<String, Value>, claim: &str) -> Result<Option<i64>, IdentityError> {
    match payload.get(claim) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(Some(i)),
            (None, Some(f)) if f.is_finite() => Ok(Some(f.floor() as i64)),
            _ => Err(IdentityError::Malformed(format!("`{claim}` is not a date"))),
        },
        Some(_) => Err(IdentityError::Malformed(format!(
            "`{claim}` is not a number"
        ))),
    }
}

/// Check the time, issuer and audience claims of a token whose signature is valid, then
/// build the identity.
fn identity_from_claims(
    issuer: &TrustedIssuer,
    payload: &Map<String, Value>,
) -> Result<Identity, IdentityError> {
    let now = crate::util::now_secs();
    let exp = numeric_date(payload, "exp")?.ok_or(IdentityError::MissingClaim("exp".into()))?;
    if now >= exp.saturating_add(issuer.leeway) {
        return Err(IdentityError::Expired);
    }
    for claim in ["nbf", "iat"] {
        if let Some(t) = numeric_date(payload, claim)?
            && t > now.saturating_add(issuer.leeway)
        {
            return Err(IdentityError::NotYetValid);
        }
    }
    if payload.get("iss").and_then(Value::as_str) != Some(issuer.issuer_url.as_str()) {
        return Err(IdentityError::UnknownIssuer(String::new()));
    }
    let audience_ok = match payload.get("aud") {
        Some(Value::String(a)) => issuer.audiences.contains(a),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .any(|a| issuer.audiences.iter().any(|x| x == a)),
        Some(_) => {
            return Err(IdentityError::Malformed(
                "`aud` is not a string or list".into(),
            ));
        }
        None => return Err(IdentityError::MissingClaim("aud".into())),
    };
    if !audience_ok {
        return Err(IdentityError::WrongAudience);
    }

    let subject = payload
        .get(&issuer.subject_claim)
        .and_then(scalar_string)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| IdentityError::MissingClaim(issuer.subject_claim.clone()))?;
    let mut groups: Vec<String> = Vec::new();
    let mut add_group = |g: &str| {
        if !g.is_empty() && !groups.iter().any(|x| x == g) {
            groups.push(g.to_string());
        }
    };
    for claim in &issuer.groups_claims {
        match payload.get(claim) {
            Some(Value::String(g)) => add_group(g),
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .for_each(&mut add_group),
            _ => {}
        }
    }
    let mut claims = BTreeMap::new();
    for name in ALWAYS_KEPT
        .iter()
        .copied()
        .chain(issuer.keep_claims.iter().map(String::as_str))
    {
        if let Some(v) = payload.get(name).and_then(scalar_string) {
            claims.insert(name.to_string(), v);
        }
    }
    let display_name = ["name", "preferred_username"]
        .iter()
        .find_map(|c| payload.get(*c).and_then(Value::as_str))
        .map(str::to_string);
    Ok(Identity::verified(
        issuer.name.clone(),
        subject,
        display_name,
        groups,
        claims,
        AuthMethod::Jwt,
        exp,
    ))
}

/// A string, number or boolean claim as text; other shapes are not kept.
fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
#[path = "verifier_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "verifier_http_tests.rs"]
mod http_tests;
