//! Issuer signing keys: OIDC discovery, JWKS fetch, and a per-issuer cache.
//!
//! Keys are fetched lazily on first use, so the gateway starts while an issuer is down; until
//! keys arrive, tokens from that issuer are refused (`IssuerUnavailable`, fail closed). A
//! token naming an unknown `kid` triggers a refetch (key rotation), at most once per
//! [`REFETCH_INTERVAL`] per issuer; concurrent verifications wait for one shared fetch. The
//! built-in issuer is a cache seeded with a fixed key set and goes through the same checks.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use super::IdentityError;

/// Timeout of one discovery or JWKS request (connect and whole response).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest discovery document or JWKS accepted.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Shortest time between two fetches of one issuer's keys caused by unknown key ids.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// After a failed fetch with no keys cached, callers get the same error for this long
/// instead of each waiting on another timeout.
const FAILURE_BACKOFF: Duration = Duration::from_secs(5);
/// Keys older than this are refreshed on use (a removed key stops being accepted); when the
/// refresh fails the old keys stay in use.
const MAX_KEY_AGE: Duration = Duration::from_secs(3600);
/// Smallest RSA modulus accepted, in bytes (2048 bits).
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// The kind of a public key, which fixes the algorithms it may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA (RS256/384/512, PS256/384/512).
    Rsa,
    /// EC P-256 (ES256).
    P256,
    /// EC P-384 (ES384).
    P384,
    /// Ed25519 (EdDSA).
    Ed25519,
}

impl KeyKind {
    /// Whether a key of this kind may verify `alg`.
    pub fn allows(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyKind::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::P256 => alg == ES256,
            KeyKind::P384 => alg == ES384,
            KeyKind::Ed25519 => alg == EdDSA,
        }
    }
}

/// One verification key from a JWKS.
#[derive(Clone)]
pub struct VerifyKey {
    /// `kid`, when the key has one.
    pub kid: Option<String>,
    /// `alg` the key declares, when it declares one.
    pub alg: Option<String>,
    /// Key type.
    pub kind: KeyKind,
    pub(crate) key: DecodingKey,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl VerifyKey {
    /// Whether this key may verify a token signed with `alg`: the key type must fit and a
    /// declared `alg` must be exactly `alg`.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        self.kind.allows(alg) && self.alg.as_deref().is_none_or(|a| a == alg_name(alg))
    }
}

/// The JOSE name of an algorithm.
pub fn alg_name(alg: Algorithm) -> &'static str {
    use Algorithm::*;
    match alg {
        HS256 => "HS256",
        HS384 => "HS384",
        HS512 => "HS512",
        ES256 => "ES256",
        ES384 => "ES384",
        RS256 => "RS256",
        RS384 => "RS384",
        RS512 => "RS512",
        PS256 => "PS256",
        PS384 => "PS384",
        PS512 => "PS512",
        EdDSA => "EdDSA",
        // A newer jsonwebtoken algorithm: no key here declares it, so it never matches.
        _ => "unsupported",
    }
}

/// The usable signature keys of one JWKS.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<VerifyKey>,
}

impl KeySet {
    /// Parse a JWKS document. Keys that cannot verify signatures here are skipped: encryption
    /// keys, symmetric (`oct`) keys (accepting one would let anyone who read the JWKS mint
    /// HMAC tokens), unknown types and curves, short RSA moduli, malformed members.
    pub fn from_jwks(doc: &Value) -> Result<KeySet, String> {
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("JWKS has no `keys` array")?;
        Ok(KeySet {
            keys: keys.iter().filter_map(parse_jwk).collect(),
        })
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is usable.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key with this `kid`.
    pub fn by_kid(&self, kid: &str) -> Option<&VerifyKey> {
        self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    }

    /// The only key that accepts `alg`, for tokens without a `kid`; none when zero or
    /// several keys fit (guessing among several would be trial verification).
    pub fn single_for(&self, alg: Algorithm) -> Option<&VerifyKey> {
        let mut fitting = self.keys.iter().filter(|k| k.accepts(alg));
        match (fitting.next(), fitting.next()) {
            (Some(k), None) => Some(k),
            _ => None,
        }
    }
}

fn b64_len(v: &Value, member: &str) -> Option<(String, usize)> {
    let s = v.get(member)?.as_str()?;
    let len = URL_SAFE_NO_PAD.decode(s).ok()?.len();
    Some((s.to_string(), len))
}

fn parse_jwk(v: &Value) -> Option<VerifyKey> {
    if v.get("use").is_some_and(|u| u.as_str() != Some("sig")) {
        return None;
    }
    if let Some(ops) = v.get("key_ops") {
        let ops = ops.as_array()?;
        if !ops.iter().any(|o| o.as_str() == Some("verify")) {
            return None;
        }
    }
    let (kind, key) = match v.get("kty")?.as_str()? {
        "RSA" => {
            let (n, n_len) = b64_len(v, "n")?;
            let (e, _) = b64_len(v, "e")?;
            // A leading zero byte does not count towards the modulus size.
            let n_bytes = URL_SAFE_NO_PAD.decode(&n).ok()?;
            let significant = n_len - n_bytes.iter().take_while(|b| **b == 0).count();
            if significant < MIN_RSA_MODULUS_BYTES {
                return None;
            }
            (KeyKind::Rsa, DecodingKey::from_rsa_components(&n, &e).ok()?)
        }
        "EC" => {
            let (kind, size) = match v.get("crv")?.as_str()? {
                "P-256" => (KeyKind::P256, 32),
                "P-384" => (KeyKind::P384, 48),
                _ => return None,
            };
            let (x, x_len) = b64_len(v, "x")?;
            let (y, y_len) = b64_len(v, "y")?;
            if x_len != size || y_len != size {
                return None;
            }
            (kind, DecodingKey::from_ec_components(&x, &y).ok()?)
        }
        "OKP" => {
            if v.get("crv")?.as_str()? != "Ed25519" {
                return None;
            }
            let (x, x_len) = b64_len(v, "x")?;
            if x_len != 32 {
                return None;
            }
            (KeyKind::Ed25519, DecodingKey::from_ed_components(&x).ok()?)
        }
        _ => return None,
    };
    let alg = match v.get("alg") {
        None => None,
        Some(a) => Some(a.as_str()?.to_string()),
    };
    // A key that declares an algorithm its type cannot do is unusable, not "any algorithm".
    if let Some(a) = &alg
        && !a.parse::<Algorithm>().is_ok_and(|a| kind.allows(a))
    {
        return None;
    }
    let kid = match v.get("kid") {
        None => None,
        Some(k) => Some(k.as_str()?.to_string()),
    };
    Some(VerifyKey {
        kid,
        alg,
        kind,
        key,
    })
}

/// Where an issuer's keys come from.
enum Source {
    /// A fixed key set (the built-in issuer): never fetched.
    Fixed,
    /// Fetched over HTTP: the JWKS at `jwks_uri`, or the one discovery names.
    Remote {
        http: reqwest::Client,
        jwks_uri: Option<String>,
    },
}

#[derive(Clone)]
struct Cached {
    set: Arc<KeySet>,
    fetched: Instant,
}

#[derive(Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    last_error: Option<String>,
}

/// One issuer's key cache.
pub struct IssuerKeys {
    /// Configured issuer name, for errors.
    name: String,
    /// Issuer URL (`iss`), exactly as configured.
    issuer: String,
    source: Source,
    current: RwLock<Option<Cached>>,
    refetch_interval: Duration,
    /// Held while fetching, so concurrent verifications share one fetch.
    fetch: tokio::sync::Mutex<FetchState>,
}

impl std::fmt::Debug for IssuerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerKeys")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl IssuerKeys {
    /// A cache whose keys are always `set` (the built-in issuer).
    pub fn fixed(name: &str, issuer: &str, set: KeySet) -> IssuerKeys {
        IssuerKeys {
            name: name.to_string(),
            issuer: issuer.to_string(),
            source: Source::Fixed,
            current: RwLock::new(Some(Cached {
                set: Arc::new(set),
                fetched: Instant::now(),
            })),
            refetch_interval: REFETCH_INTERVAL,
            fetch: tokio::sync::Mutex::new(FetchState::default()),
        }
    }

    /// A cache filled over HTTP on first use: from `jwks_uri` when given, else from the
    /// `jwks_uri` of the issuer's discovery document.
    pub fn remote(
        name: &str,
        issuer: &str,
        jwks_uri: Option<String>,
        http: reqwest::Client,
    ) -> IssuerKeys {
        IssuerKeys {
            name: name.to_string(),
            issuer: issuer.to_string(),
            source: Source::Remote { http, jwks_uri },
            current: RwLock::new(None),
            refetch_interval: REFETCH_INTERVAL,
            fetch: tokio::sync::Mutex::new(FetchState::default()),
        }
    }

    fn cached(&self) -> Option<Cached> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn install(&self, set: Arc<KeySet>) {
        let value = Some(Cached {
            set,
            fetched: Instant::now(),
        });
        match self.current.write() {
            Ok(mut g) => *g = value,
            Err(poisoned) => *poisoned.into_inner() = value,
        }
    }

    fn unavailable(&self, reason: String) -> IdentityError {
        IdentityError::IssuerUnavailable {
            issuer: self.name.clone(),
            reason,
        }
    }

    /// The current keys, fetching them on first use.
    pub async fn get(&self) -> Result<Arc<KeySet>, IdentityError> {
        match (&self.source, self.cached()) {
            (Source::Fixed, Some(c)) => Ok(c.set),
            (Source::Fixed, None) => Err(self.unavailable("no keys".into())),
            (Source::Remote { .. }, None) => self.refresh(None).await,
            (Source::Remote { .. }, Some(c)) if c.fetched.elapsed() < MAX_KEY_AGE => Ok(c.set),
            (Source::Remote { .. }, Some(c)) => {
                // Stale: refresh unless another task already is; meanwhile the old keys serve.
                if self.fetch.try_lock().is_err() {
                    return Ok(c.set);
                }
                self.refresh(Some(&c.set)).await
            }
        }
    }

    /// Keys after a token named a key id missing from `seen`: refetched unless a fetch
    /// happened less than [`REFETCH_INTERVAL`] ago (then the current keys are returned).
    pub async fn refresh_for_unknown_kid(
        &self,
        seen: &Arc<KeySet>,
    ) -> Result<Arc<KeySet>, IdentityError> {
        self.refresh(Some(seen)).await
    }

    /// Shorten the refetch interval (tests exercise rotation without waiting).
    #[cfg(test)]
    pub(crate) fn set_refetch_interval(&mut self, interval: Duration) {
        self.refetch_interval = interval;
    }

    /// Fetch new keys, rate-limited, sharing one fetch among concurrent callers. `seen` is
    /// the set the caller found wanting (none when there was no set).
    async fn refresh(&self, seen: Option<&Arc<KeySet>>) -> Result<Arc<KeySet>, IdentityError> {
        let Source::Remote { http, jwks_uri } = &self.source else {
            return self
                .cached()
                .map(|c| c.set)
                .ok_or_else(|| self.unavailable("no keys".into()));
        };
        let mut state = self.fetch.lock().await;
        let current = self.cached();
        let recent = |limit: Duration| state.last_attempt.is_some_and(|t| t.elapsed() < limit);
        match &current {
            // Another caller installed new keys while this one waited for the lock.
            Some(c) if seen.is_none_or(|s| !Arc::ptr_eq(s, &c.set)) => return Ok(c.set.clone()),
            Some(c) if recent(self.refetch_interval) => return Ok(c.set.clone()),
            None if recent(FAILURE_BACKOFF) => {
                let reason = state.last_error.clone().unwrap_or_else(|| "no keys".into());
                return Err(self.unavailable(reason));
            }
            _ => {}
        }
        state.last_attempt = Some(Instant::now());
        match fetch_key_set(http, &self.issuer, jwks_uri.as_deref()).await {
            Ok(set) => {
                let set = Arc::new(set);
                self.install(set.clone());
                state.last_error = None;
                tracing::debug!(issuer = %self.name, keys = set.len(), "fetched issuer keys");
                Ok(set)
            }
            Err(reason) => {
                tracing::warn!(issuer = %self.name, %reason, "cannot fetch issuer keys");
                state.last_error = Some(reason.clone());
                match current {
                    Some(c) => Ok(c.set),
                    None => Err(self.unavailable(reason)),
                }
            }
        }
    }
}

/// Fetch the JWKS, through discovery unless `jwks_uri` is configured.
async fn fetch_key_set(
    http: &reqwest::Client,
    issuer: &str,
    jwks_uri: Option<&str>,
) -> Result<KeySet, String> {
    let uri = match jwks_uri {
        Some(u) => u.to_string(),
        None => discover_jwks_uri(http, issuer).await?,
    };
    let doc = get_json(http, &uri).await?;
    let set = KeySet::from_jwks(&doc).map_err(|e| format!("{uri}: {e}"))?;
    if set.is_empty() {
        return Err(format!("{uri}: JWKS holds no usable signature key"));
    }
    Ok(set)
}

/// Read the discovery document and return its `jwks_uri`, after checking that it describes
/// exactly the configured issuer.
async fn discover_jwks_uri(http: &reqwest::Client, issuer: &str) -> Result<String, String> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let doc = get_json(http, &url).await?;
    let found = doc.get("issuer").and_then(Value::as_str).unwrap_or("");
    if found != issuer {
        return Err(format!(
            "{url}: discovery names issuer `{found}`, not the configured `{issuer}`"
        ));
    }
    let uri = doc
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{url}: no `jwks_uri`"))?;
    // Keys for an https issuer must not come over plain http.
    let allowed = uri.starts_with("https://")
        || (uri.starts_with("http://") && !issuer.starts_with("https://"));
    if !allowed {
        return Err(format!("{url}: `jwks_uri` {uri} is not an acceptable URL"));
    }
    Ok(uri.to_string())
}

/// GET a JSON document, refusing error statuses and bodies over [`MAX_DOCUMENT_BYTES`].
async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    let mut resp = http
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{url}: HTTP {}", resp.status()));
    }
    let too_big = || format!("{url}: response larger than {MAX_DOCUMENT_BYTES} bytes");
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
    {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("{url}: {e}"))? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| format!("{url}: not JSON: {e}"))
}

/// The HTTP client used for discovery and JWKS: bounded time, few redirects.
pub fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(FETCH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()
        .map_err(|e| format!("cannot build the HTTP client for issuer discovery: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn unusable_keys_are_skipped() {
        let p256 = json!({"kty": "EC", "crv": "P-256", "x": b64(&[1; 32]), "y": b64(&[2; 32]), "kid": "ec"});
        let doc = json!({"keys": [
            p256,
            {"kty": "oct", "k": b64(b"secret"), "kid": "hmac"},
            {"kty": "EC", "crv": "P-256", "x": b64(&[1; 32]), "y": b64(&[2; 32]), "use": "enc"},
            {"kty": "RSA", "n": b64(&[0xff; 128]), "e": b64(&[1, 0, 1]), "kid": "short-rsa"},
            {"kty": "RSA", "n": b64(&[0xff; 256]), "e": b64(&[1, 0, 1]), "kid": "rsa", "alg": "RS256"},
            {"kty": "RSA", "n": b64(&[0xff; 256]), "e": b64(&[1, 0, 1]), "kid": "liar", "alg": "ES256"},
            {"kty": "EC", "crv": "P-521", "x": b64(&[1; 66]), "y": b64(&[2; 66])},
            "not an object",
        ]});
        let set = KeySet::from_jwks(&doc).unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.by_kid("ec").is_some());
        assert!(set.by_kid("rsa").is_some());
        assert!(set.by_kid("hmac").is_none());
        assert!(set.by_kid("short-rsa").is_none());
        assert!(set.by_kid("liar").is_none());
    }

    #[test]
    fn declared_alg_restricts_the_key() {
        let doc = json!({"keys": [
            {"kty": "RSA", "n": b64(&[0xff; 256]), "e": b64(&[1, 0, 1]), "alg": "PS256"},
        ]});
        let set = KeySet::from_jwks(&doc).unwrap();
        assert!(set.single_for(Algorithm::RS256).is_none());
        assert!(set.single_for(Algorithm::PS256).is_some());
        assert!(set.single_for(Algorithm::ES256).is_none());
    }

    #[test]
    fn no_kid_needs_exactly_one_fitting_key() {
        let k =
            |x: u8| json!({"kty": "EC", "crv": "P-256", "x": b64(&[x; 32]), "y": b64(&[2; 32])});
        let one = KeySet::from_jwks(&json!({"keys": [k(1)]})).unwrap();
        assert!(one.single_for(Algorithm::ES256).is_some());
        let two = KeySet::from_jwks(&json!({"keys": [k(1), k(3)]})).unwrap();
        assert!(two.single_for(Algorithm::ES256).is_none());
    }

    #[test]
    fn a_document_without_keys_is_an_error() {
        assert!(KeySet::from_jwks(&json!({"issuer": "x"})).is_err());
    }
}
