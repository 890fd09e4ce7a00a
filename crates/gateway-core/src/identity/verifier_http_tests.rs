//! Tests of external issuers: discovery and JWKS served by a local HTTP responder (fetch,
//! cache, refetch on unknown kid, failures), and, when PORTCULLIS_TEST_OIDC_URL is set, a
//! real OpenID Connect provider (tests/oidc, started by tests/scripts/oidc.sh).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::tests::{identity_cfg, issuer_cfg};
use super::*;
use crate::identity::access_key::tests::MemStore;
use crate::identity::builtin::tests::TempDir;

// ---- external issuer over HTTP -------------------------------------------------------

/// A minimal discovery + JWKS server on a loopback port.
struct TestIdp {
    url: String,
    jwks: Arc<Mutex<Value>>,
    /// Issuer the discovery document claims; defaults to the server's own URL.
    claimed_issuer: Arc<Mutex<Option<String>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl TestIdp {
    async fn start() -> TestIdp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let idp = TestIdp {
            url: url.clone(),
            jwks: Arc::new(Mutex::new(json!({"keys": []}))),
            claimed_issuer: Arc::new(Mutex::new(None)),
            hits: Arc::new(Mutex::new(HashMap::new())),
        };
        let (jwks, claimed, hits) = (
            idp.jwks.clone(),
            idp.claimed_issuer.clone(),
            idp.hits.clone(),
        );
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (jwks, claimed, hits, url) =
                    (jwks.clone(), claimed.clone(), hits.clone(), url.clone());
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&req);
                    let path = text.split(' ').nth(1).unwrap_or("").to_string();
                    *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
                    let body = match path.as_str() {
                        "/.well-known/openid-configuration" => Some(json!({
                            "issuer": claimed.lock().unwrap().clone().unwrap_or(url.clone()),
                            "jwks_uri": format!("{url}/jwks"),
                        })),
                        "/jwks" => Some(jwks.lock().unwrap().clone()),
                        _ => None,
                    };
                    let resp = match body {
                        Some(b) => {
                            let b = b.to_string();
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
                                b.len()
                            )
                        }
                        None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
                    };
                    let _ = sock.write_all(resp.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        idp
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    fn set_jwks(&self, keys: &[&BuiltinIssuer]) {
        let keys: Vec<Value> = keys
            .iter()
            .map(|k| k.jwks_json()["keys"][0].clone())
            .collect();
        *self.jwks.lock().unwrap() = json!({ "keys": keys });
    }
}

/// Signing keys that claim to be the test IdP.
fn idp_key(dir: &TempDir, idp: &TestIdp) -> BuiltinIssuer {
    BuiltinIssuer::load_or_create(&dir.0, &idp.url).unwrap()
}

fn external_verifier(idp: &TestIdp) -> Verifier {
    let cfg = identity_cfg(vec![issuer_cfg(
        "ext",
        Some(&idp.url),
        &["api://portcullis"],
    )]);
    Verifier::new(&cfg, None, Arc::new(MemStore::default())).unwrap()
}

fn ext_token(key: &BuiltinIssuer) -> String {
    key.issue(
        "ci-job",
        &[],
        &BTreeMap::new(),
        Duration::from_secs(300),
        "api://portcullis",
    )
    .unwrap()
}

#[tokio::test]
async fn external_keys_are_fetched_once_and_refetched_for_a_new_kid() {
    let idp = TestIdp::start().await;
    let (dir_a, dir_b) = (TempDir::new(), TempDir::new());
    let (key_a, key_b) = (idp_key(&dir_a, &idp), idp_key(&dir_b, &idp));
    idp.set_jwks(&[&key_a]);
    let mut verifier = external_verifier(&idp);
    assert_eq!(idp.hits("/jwks"), 0, "nothing fetched before first use");

    let id = verifier.verify(&ext_token(&key_a)).await.unwrap();
    assert_eq!(id.principal(), "ext/ci-job");
    verifier.verify(&ext_token(&key_a)).await.unwrap();
    assert_eq!(
        (
            idp.hits("/.well-known/openid-configuration"),
            idp.hits("/jwks")
        ),
        (1, 1)
    );

    // The issuer rotates to key B. Within the refetch interval the new kid stays unknown.
    idp.set_jwks(&[&key_a, &key_b]);
    assert_eq!(
        verifier.verify(&ext_token(&key_b)).await,
        Err(IdentityError::UnknownKey(key_b.kid().into()))
    );
    assert_eq!(idp.hits("/jwks"), 1, "rate-limited: no refetch");

    // Once the interval has passed, an unknown kid refetches and the token verifies.
    verifier.set_refetch_interval(Duration::ZERO);
    verifier.verify(&ext_token(&key_b)).await.unwrap();
    assert_eq!(idp.hits("/jwks"), 2);
    verifier.verify(&ext_token(&key_a)).await.unwrap();
    assert_eq!(idp.hits("/jwks"), 2, "known kids need no fetch");
}

#[tokio::test]
async fn concurrent_first_verifications_share_one_fetch() {
    let idp = TestIdp::start().await;
    let dir = TempDir::new();
    let key = idp_key(&dir, &idp);
    idp.set_jwks(&[&key]);
    let verifier = Arc::new(external_verifier(&idp));
    let token = ext_token(&key);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (v, t) = (verifier.clone(), token.clone());
            tokio::spawn(async move { v.verify(&t).await })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().is_ok());
    }
    assert_eq!(idp.hits("/.well-known/openid-configuration"), 1);
    assert_eq!(idp.hits("/jwks"), 1);
}

#[tokio::test]
async fn discovery_naming_another_issuer_is_refused() {
    let idp = TestIdp::start().await;
    let dir = TempDir::new();
    let key = idp_key(&dir, &idp);
    idp.set_jwks(&[&key]);
    *idp.claimed_issuer.lock().unwrap() = Some(format!("{}/", idp.url));
    let verifier = external_verifier(&idp);
    match verifier.verify(&ext_token(&key)).await {
        Err(IdentityError::IssuerUnavailable { issuer, reason }) => {
            assert_eq!(issuer, "ext");
            assert!(reason.contains("not the configured"), "{reason}");
        }
        other => panic!("expected IssuerUnavailable, got {other:?}"),
    }
    assert_eq!(idp.hits("/jwks"), 0);
}

#[tokio::test]
async fn configured_jwks_uri_skips_discovery() {
    let idp = TestIdp::start().await;
    let dir = TempDir::new();
    let key = idp_key(&dir, &idp);
    idp.set_jwks(&[&key]);
    let mut cfg = issuer_cfg("ext", Some(&idp.url), &["api://portcullis"]);
    cfg.jwks_uri = Some(format!("{}/jwks", idp.url));
    let verifier = Verifier::new(
        &identity_cfg(vec![cfg]),
        None,
        Arc::new(MemStore::default()),
    )
    .unwrap();
    verifier.verify(&ext_token(&key)).await.unwrap();
    assert_eq!(idp.hits("/.well-known/openid-configuration"), 0);
}

#[tokio::test]
async fn oversized_jwks_is_refused() {
    let idp = TestIdp::start().await;
    let dir = TempDir::new();
    let key = idp_key(&dir, &idp);
    *idp.jwks.lock().unwrap() = json!({"keys": [key.jwks_json()["keys"][0]], "pad": "x".repeat(super::super::jwks::MAX_DOCUMENT_BYTES)});
    let verifier = external_verifier(&idp);
    match verifier.verify(&ext_token(&key)).await {
        Err(IdentityError::IssuerUnavailable { reason, .. }) => {
            assert!(reason.contains("larger than"), "{reason}")
        }
        other => panic!("expected IssuerUnavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn unreachable_issuer_fails_closed_without_blocking_startup() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let cfg = identity_cfg(vec![issuer_cfg("down", Some(&url), &["api://portcullis"])]);
    let verifier = Verifier::new(&cfg, None, Arc::new(MemStore::default())).unwrap();
    let dir = TempDir::new();
    let key = BuiltinIssuer::load_or_create(&dir.0, &url).unwrap();
    let token = ext_token(&key);
    for _ in 0..2 {
        assert!(matches!(
            verifier.verify(&token).await,
            Err(IdentityError::IssuerUnavailable { .. })
        ));
    }
}

// ---- a real OpenID Connect provider ---------------------------------------------------

/// Client-credentials token from the test provider (tests/oidc/server.mjs).
async fn oidc_token(base: &str, client: &str, secret: &str, resource: &str) -> String {
    let body = format!(
        "grant_type=client_credentials&resource={}",
        resource.replace(':', "%3A").replace('/', "%2F")
    );
    let resp: Value = reqwest::Client::new()
        .post(format!("{base}/token"))
        .basic_auth(client, Some(secret))
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    resp["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token in {resp}"))
        .to_string()
}

/// Start it with `tests/scripts/oidc.sh start DIR PORT` and set
/// PORTCULLIS_TEST_OIDC_URL=http://127.0.0.1:PORT.
#[tokio::test]
async fn real_oidc_provider_token_verifies() {
    let Ok(base) = std::env::var("PORTCULLIS_TEST_OIDC_URL") else {
        eprintln!(
            "skipped: set PORTCULLIS_TEST_OIDC_URL (tests/scripts/oidc.sh start DIR PORT) to run"
        );
        return;
    };
    let base = base.trim_end_matches('/').to_string();
    let cfg = identity_cfg(vec![issuer_cfg("ci", Some(&base), &["api://portcullis"])]);
    let verifier = Verifier::new(&cfg, None, Arc::new(MemStore::default())).unwrap();

    let token = oidc_token(&base, "ci-job", "ci-secret", "api://portcullis").await;
    let id = verifier.verify(&token).await.unwrap();
    assert_eq!(id.principal(), "ci/ci-job");
    assert_eq!(id.groups, vec!["ci".to_string(), "deployers".to_string()]);
    assert_eq!(
        id.claims.get("client_id").map(String::as_str),
        Some("ci-job")
    );
    assert_eq!(
        id.claims.get("repository").map(String::as_str),
        Some("portcullis-gateway/portcullis")
    );

    let other = oidc_token(&base, "other-aud", "secret", "api://other").await;
    assert_eq!(
        verifier.verify(&other).await,
        Err(IdentityError::WrongAudience)
    );

    // And the same token through an access key.
    let (key, _) = verifier
        .exchange(&token, Duration::from_secs(60))
        .await
        .unwrap();
    let via_key = verifier.verify(&key).await.unwrap();
    assert_eq!(via_key.principal(), "ci/ci-job");
    assert_eq!(via_key.method, AuthMethod::AccessKey);
}
