//! The gateway's own token issuer (`portcullis token issue`): an ES256 key kept in the state
//! directory, tokens minted with it, and the discovery document and JWKS the admin listener
//! serves. The verifier checks these tokens through the same key-set path as any external
//! issuer's.

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::error::Error;

/// Audience of built-in tokens when none is asked for.
pub const DEFAULT_AUDIENCE: &str = "portcullis";
/// Claims `issue` sets itself; a caller's extra claims may not replace them.
const RESERVED_CLAIMS: &[&str] = &["iss", "sub", "aud", "iat", "nbf", "exp", "jti", "groups"];

/// The built-in issuer: signing key, key id and issuer URL.
pub struct BuiltinIssuer {
    key: EcdsaKeyPair,
    kid: String,
    /// Public key as a JWK (with `kid`, `alg`, `use`).
    public_jwk: Value,
    issuer_url: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for BuiltinIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltinIssuer")
            .field("issuer_url", &self.issuer_url)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl BuiltinIssuer {
    /// Load the signing key from `<state_dir>/issuer/signing-key.p8`, creating it (P-256,
    /// PKCS#8, mode 0600) on first start.
    pub fn load_or_create(state_dir: &Path, issuer_url: &str) -> Result<BuiltinIssuer, Error> {
        let dir = state_dir.join("issuer");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let path = dir.join("signing-key.p8");
        let pkcs8 =
            crate::util::load_or_create_private(&path, "built-in issuer signing key", || {
                let doc = EcdsaKeyPair::generate_pkcs8(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    &SystemRandom::new(),
                )
                .map_err(|_| Error::Config("cannot generate the built-in issuer key".into()))?;
                Ok(doc.as_ref().to_vec())
            })?;
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8).map_err(|e| {
                Error::Config(format!(
                    "{}: not a P-256 PKCS#8 private key: {e}",
                    path.display()
                ))
            })?;
        Ok(Self::from_key(key, issuer_url))
    }

    fn from_key(key: EcdsaKeyPair, issuer_url: &str) -> BuiltinIssuer {
        // Uncompressed point: 0x04 || x (32 bytes) || y (32 bytes).
        let point = key.public_key().as_ref();
        let coords = point.get(1..).unwrap_or_default();
        let (x, y) = coords.split_at(coords.len() / 2);
        let x = URL_SAFE_NO_PAD.encode(x);
        let y = URL_SAFE_NO_PAD.encode(y);
        // RFC 7638: SHA-256 over the required members in lexicographic order, no whitespace.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
        let public_jwk = json!({
            "kty": "EC", "crv": "P-256", "x": x, "y": y,
            "kid": kid, "alg": "ES256", "use": "sig",
        });
        BuiltinIssuer {
            key,
            kid,
            public_jwk,
            issuer_url: issuer_url.trim_end_matches('/').to_string(),
            rng: SystemRandom::new(),
        }
    }

    /// The URL this issuer puts in `iss`.
    pub fn issuer_url(&self) -> &str {
        &self.issuer_url
    }

    /// Key id: the RFC 7638 thumbprint of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key set, served at `<issuer>/.well-known/jwks.json`.
    pub fn jwks_json(&self) -> Value {
        json!({ "keys": [self.public_jwk.clone()] })
    }

    /// The OIDC discovery document, served at `<issuer>/.well-known/openid-configuration`.
    pub fn discovery_json(&self) -> Value {
        json!({
            "issuer": self.issuer_url,
            "jwks_uri": format!("{}/.well-known/jwks.json", self.issuer_url),
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
            "claims_supported": ["iss", "sub", "aud", "iat", "nbf", "exp", "jti", "groups"],
        })
    }

    /// Mint a token for `sub`: `aud` is `audience` (or `portcullis` when empty), valid from
    /// now for `ttl`, with `groups` and the extra string `claims`.
    pub fn issue(
        &self,
        sub: &str,
        groups: &[String],
        claims: &BTreeMap<String, String>,
        ttl: Duration,
        audience: &str,
    ) -> Result<String, Error> {
        if sub.is_empty() {
            return Err(Error::Config("token subject must not be empty".into()));
        }
        let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        if ttl <= 0 {
            return Err(Error::Config(
                "token lifetime must be at least one second".into(),
            ));
        }
        let mut payload = Map::new();
        for (k, v) in claims {
            if RESERVED_CLAIMS.contains(&k.as_str()) {
                return Err(Error::Config(format!(
                    "claim `{k}` is set by the issuer and cannot be given"
                )));
            }
            payload.insert(k.clone(), Value::String(v.clone()));
        }
        let now = crate::util::now_secs();
        let audience = if audience.is_empty() {
            DEFAULT_AUDIENCE
        } else {
            audience
        };
        payload.insert("iss".into(), json!(self.issuer_url));
        payload.insert("sub".into(), json!(sub));
        payload.insert("aud".into(), json!(audience));
        payload.insert("iat".into(), json!(now));
        payload.insert("nbf".into(), json!(now));
        payload.insert("exp".into(), json!(now.saturating_add(ttl)));
        payload.insert("jti".into(), json!(crate::util::random_hex(16)));
        payload.insert("groups".into(), json!(groups));
        self.sign(&Value::Object(payload))
    }

    /// Sign `payload` as a compact JWS with this issuer's header.
    fn sign(&self, payload: &Value) -> Result<String, Error> {
        let header = json!({ "alg": "ES256", "typ": "JWT", "kid": self.kid });
        self.sign_with_header(&header, payload)
    }

    /// Sign any header and payload with the issuer key (tests forge tokens with it).
    pub(crate) fn sign_with_header(
        &self,
        header: &Value,
        payload: &Value,
    ) -> Result<String, Error> {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let sig = self
            .key
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| Error::Config("signing with the built-in issuer key failed".into()))?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    use super::*;

    /// A fresh, uniquely named directory under the system temp dir, removed on drop.
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub(crate) fn new() -> TempDir {
            let p = std::env::temp_dir().join(format!(
                "portcullis-identity-{}",
                crate::util::random_hex(8)
            ));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn key_is_created_private_and_reused() {
        let dir = TempDir::new();
        let a = BuiltinIssuer::load_or_create(&dir.0, "http://127.0.0.1:8080/").unwrap();
        let path = dir.0.join("issuer/signing-key.p8");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = BuiltinIssuer::load_or_create(&dir.0, "http://127.0.0.1:8080").unwrap();
        assert_eq!(a.kid(), b.kid());
        assert_eq!(a.issuer_url(), "http://127.0.0.1:8080");
        let leftovers: Vec<_> = std::fs::read_dir(dir.0.join("issuer")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary files left behind");
    }

    #[test]
    fn kid_is_the_rfc7638_thumbprint() {
        let dir = TempDir::new();
        let iss = BuiltinIssuer::load_or_create(&dir.0, "http://gw").unwrap();
        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(iss.jwks_json()["keys"][0].clone()).unwrap();
        let expected = jwk
            .thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
            .unwrap();
        assert_eq!(iss.kid(), expected);
        assert_eq!(
            iss.discovery_json()["jwks_uri"],
            "http://gw/.well-known/jwks.json"
        );
    }

    #[test]
    fn a_garbage_key_file_is_refused() {
        let dir = TempDir::new();
        std::fs::create_dir_all(dir.0.join("issuer")).unwrap();
        std::fs::write(dir.0.join("issuer/signing-key.p8"), b"not a key").unwrap();
        assert!(matches!(
            BuiltinIssuer::load_or_create(&dir.0, "http://gw"),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn reserved_claims_cannot_be_overridden() {
        let dir = TempDir::new();
        let iss = BuiltinIssuer::load_or_create(&dir.0, "http://gw").unwrap();
        let mut claims = BTreeMap::new();
        claims.insert("iss".to_string(), "https://elsewhere".to_string());
        let r = iss.issue("alice", &[], &claims, Duration::from_secs(60), "");
        assert!(matches!(r, Err(Error::Config(_))));
        let r = iss.issue("alice", &[], &BTreeMap::new(), Duration::ZERO, "");
        assert!(matches!(r, Err(Error::Config(_))));
    }
}
