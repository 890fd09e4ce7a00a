//! Who is calling. An [`Identity`] is produced only by verifying a credential here; proxies
//! never build one from unverified input.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub mod access_key;
pub mod builtin;
pub mod jwks;
pub mod verifier;
pub mod watch;

pub use verifier::{VERIFY_TIMEOUT, Verifier};

pub use crate::event::AuthMethod;

/// Issuer name of identities from `[[identity.ssh_keys]]`.
pub const SSH_KEY_ISSUER: &str = "ssh-key";

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Configured issuer name (`builtin`, `entra`, ...).
    pub issuer: String,
    /// Subject (from `sub` or the issuer's configured subject claim).
    pub subject: String,
    /// Human-friendly name when the token carries one (`name`, `preferred_username`).
    pub display_name: Option<String>,
    /// Group and role names from the configured claims.
    pub groups: Vec<String>,
    /// Claims kept for audit and policy (`azp`, `appid`, configured `keep_claims`).
    pub claims: BTreeMap<String, String>,
    /// How the identity authenticated.
    pub method: AuthMethod,
    /// Unix seconds after which the credential is no longer valid.
    pub expires_at: i64,
    /// For an access key: the stored hash that finds its record again, so a live session
    /// can see the key revoked ([`Verifier::still_valid`]). Never serialised.
    #[serde(skip)]
    pub(crate) credential: Option<String>,
    #[serde(skip)]
    _proof: Proof,
}

/// Zero-sized marker that only this module can create: an `Identity` cannot be built
/// (not even deserialised into a usable one) outside identity verification.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Proof;

impl Identity {
    /// Only the verifiers in this module construct identities.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn verified(
        issuer: String,
        subject: String,
        display_name: Option<String>,
        groups: Vec<String>,
        claims: BTreeMap<String, String>,
        method: AuthMethod,
        expires_at: i64,
    ) -> Identity {
        Identity {
            issuer,
            subject,
            display_name,
            groups,
            claims,
            method,
            expires_at,
            credential: None,
            _proof: Proof,
        }
    }

    /// The Cedar principal id: `<issuer>/<subject>`.
    pub fn principal(&self) -> String {
        format!("{}/{}", self.issuer, self.subject)
    }

    /// A test identity. Only for tests of crates that consume identities.
    #[doc(hidden)]
    pub fn for_tests(issuer: &str, subject: &str, groups: &[&str]) -> Identity {
        Identity::verified(
            issuer.into(),
            subject.into(),
            None,
            groups.iter().map(|g| g.to_string()).collect(),
            BTreeMap::new(),
            AuthMethod::Jwt,
            i64::MAX,
        )
    }
}

/// Why a credential was refused. The `Display` text is what the client reads.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum IdentityError {
    #[error("no token was presented")]
    Missing,
    #[error("token is malformed: {0}")]
    Malformed(String),
    #[error("token issuer `{0}` is not trusted by this gateway")]
    UnknownIssuer(String),
    #[error("token algorithm `{0}` is not accepted")]
    BadAlgorithm(String),
    #[error("token signing key `{0}` is unknown to its issuer")]
    UnknownKey(String),
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token audience is not accepted by this gateway")]
    WrongAudience,
    #[error("token has no `{0}` claim")]
    MissingClaim(String),
    #[error("access key is unknown, expired or revoked")]
    BadAccessKey,
    #[error("issuer `{issuer}` is unavailable: {reason}")]
    IssuerUnavailable { issuer: String, reason: String },
}

impl From<&Identity> for crate::event::IdentityRecord {
    fn from(id: &Identity) -> Self {
        crate::event::IdentityRecord {
            principal: id.principal(),
            issuer: id.issuer.clone(),
            subject: id.subject.clone(),
            display_name: id.display_name.clone(),
            groups: id.groups.clone(),
            claims: id.claims.clone(),
            method: id.method,
        }
    }
}

impl From<IdentityError> for crate::error::Error {
    fn from(e: IdentityError) -> Self {
        crate::error::Error::Identity(e.to_string())
    }
}
