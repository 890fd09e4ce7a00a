//! Tests of the verifier with the built-in issuer: forged and malformed tokens, claims,
//! access keys. External issuers are tested in `verifier_http_tests.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::*;
use crate::config::IssuerConfig;
use crate::identity::access_key::tests::MemStore;
use crate::identity::access_key::{self, ACCESS_KEY_LEN};
use crate::identity::builtin::tests::TempDir;
use crate::store::AccessKeyRecord;

pub(super) fn issuer_cfg(name: &str, issuer: Option<&str>, audience: &[&str]) -> IssuerConfig {
    IssuerConfig {
        name: name.into(),
        issuer: issuer.map(str::to_string),
        audience: audience.iter().map(|a| a.to_string()).collect(),
        jwks_uri: None,
        groups_claims: vec!["groups".into(), "roles".into()],
        keep_claims: vec!["repository".into()],
        subject_claim: None,
        leeway_secs: 30,
    }
}

pub(super) fn identity_cfg(issuers: Vec<IssuerConfig>) -> IdentityConfig {
    IdentityConfig {
        issuers,
        access_key_max_ttl: "1h".into(),
        ssh_keys: Vec::new(),
    }
}

struct Builtin {
    _dir: TempDir,
    issuer: Arc<BuiltinIssuer>,
    store: Arc<MemStore>,
    verifier: Verifier,
}

fn builtin_with(cfg: IssuerConfig) -> Builtin {
    let dir = TempDir::new();
    let issuer = Arc::new(BuiltinIssuer::load_or_create(&dir.0, "http://127.0.0.1:8080").unwrap());
    let store = Arc::new(MemStore::default());
    let verifier = Verifier::new(
        &identity_cfg(vec![cfg]),
        Some(issuer.clone()),
        store.clone(),
    )
    .unwrap();
    Builtin {
        _dir: dir,
        issuer,
        store,
        verifier,
    }
}

fn builtin() -> Builtin {
    builtin_with(issuer_cfg("builtin", None, &[]))
}

/// Valid claims for the built-in issuer; tests change one thing at a time.
fn payload(b: &Builtin) -> Value {
    let now = crate::util::now_secs();
    json!({
        "iss": b.issuer.issuer_url(), "sub": "alice", "aud": "portcullis",
        "iat": now, "nbf": now, "exp": now + 600,
    })
}

fn forge(b: &Builtin, payload: &Value) -> String {
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": b.issuer.kid()});
    b.issuer.sign_with_header(&header, payload).unwrap()
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn builtin_token_round_trips() {
    let b = builtin();
    let mut claims = BTreeMap::new();
    claims.insert("repository".to_string(), "org/app".to_string());
    claims.insert("unlisted".to_string(), "dropped".to_string());
    let groups = vec!["dba".to_string(), "oncall".to_string()];
    let token = b
        .issuer
        .issue("alice", &groups, &claims, Duration::from_secs(900), "")
        .unwrap();
    let id = b.verifier.verify(&token).await.unwrap();
    assert_eq!(id.issuer, "builtin");
    assert_eq!(id.subject, "alice");
    assert_eq!(id.groups, groups);
    assert_eq!(
        id.claims.get("repository").map(String::as_str),
        Some("org/app")
    );
    assert!(!id.claims.contains_key("unlisted"));
    assert_eq!(id.method, AuthMethod::Jwt);
    let now = crate::util::now_secs();
    assert!((now + 890..=now + 910).contains(&id.expires_at));
}

#[tokio::test]
async fn time_claims_are_enforced() {
    let b = builtin();
    let now = crate::util::now_secs();
    let mut p = payload(&b);
    p["exp"] = json!(now - 3600);
    assert_eq!(
        b.verifier.verify(&forge(&b, &p)).await,
        Err(IdentityError::Expired)
    );
    let mut p = payload(&b);
    p["nbf"] = json!(now + 3600);
    assert_eq!(
        b.verifier.verify(&forge(&b, &p)).await,
        Err(IdentityError::NotYetValid)
    );
    let mut p = payload(&b);
    p["iat"] = json!(now + 3600);
    assert_eq!(
        b.verifier.verify(&forge(&b, &p)).await,
        Err(IdentityError::NotYetValid)
    );
    // Within the leeway is fine.
    let mut p = payload(&b);
    p["exp"] = json!(now - 10);
    assert!(b.verifier.verify(&forge(&b, &p)).await.is_ok());
    let mut p = payload(&b);
    p.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        b.verifier.verify(&forge(&b, &p)).await,
        Err(IdentityError::MissingClaim("exp".into()))
    );
}

#[tokio::test]
async fn audience_must_be_accepted() {
    let b = builtin();
    let token = b
        .issuer
        .issue(
            "alice",
            &[],
            &BTreeMap::new(),
            Duration::from_secs(60),
            "other",
        )
        .unwrap();
    assert_eq!(
        b.verifier.verify(&token).await,
        Err(IdentityError::WrongAudience)
    );
    let mut p = payload(&b);
    p["aud"] = json!(["other", "portcullis"]);
    assert!(b.verifier.verify(&forge(&b, &p)).await.is_ok());
    p["aud"] = json!(["other", "more"]);
    assert_eq!(
        b.verifier.verify(&forge(&b, &p)).await,
        Err(IdentityError::WrongAudience)
    );
    p.as_object_mut().unwrap().remove("aud");
    assert_eq!(
        b.verifier.verify(&forge(&b, &p)).await,
        Err(IdentityError::MissingClaim("aud".into()))
    );
}

#[tokio::test]
async fn unknown_issuer_is_refused() {
    let b = builtin();
    let mut p = payload(&b);
    p["iss"] = json!("https://evil.example");
    assert_eq!(
        b.verifier.verify(&forge(&b, &p)).await,
        Err(IdentityError::UnknownIssuer("https://evil.example".into()))
    );
}

#[tokio::test]
async fn tampered_payload_fails_the_signature() {
    let b = builtin();
    let token = forge(&b, &payload(&b));
    let parts: Vec<&str> = token.split('.').collect();
    let mut p = payload(&b);
    p["sub"] = json!("root");
    let tampered = format!("{}.{}.{}", parts[0], b64(&p), parts[2]);
    assert_eq!(
        b.verifier.verify(&tampered).await,
        Err(IdentityError::BadSignature)
    );
}

#[tokio::test]
async fn alg_none_is_refused() {
    let b = builtin();
    let header = json!({"alg": "none", "typ": "JWT"});
    let token = format!("{}.{}.", b64(&header), b64(&payload(&b)));
    assert_eq!(
        b.verifier.verify(&token).await,
        Err(IdentityError::BadAlgorithm("none".into()))
    );
}

#[tokio::test]
async fn hmac_with_the_public_key_as_secret_is_refused() {
    use aws_lc_rs::hmac;
    let b = builtin();
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": b.issuer.kid()});
    let input = format!("{}.{}", b64(&header), b64(&payload(&b)));
    let public = b.issuer.jwks_json()["keys"][0].to_string();
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, public.as_bytes()),
        input.as_bytes(),
    );
    let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
    assert_eq!(
        b.verifier.verify(&token).await,
        Err(IdentityError::BadAlgorithm("HS256".into()))
    );
}

#[tokio::test]
async fn algorithm_must_fit_the_key() {
    let b = builtin();
    let header = json!({"alg": "ES384", "kid": b.issuer.kid()});
    let token = b.issuer.sign_with_header(&header, &payload(&b)).unwrap();
    assert_eq!(
        b.verifier.verify(&token).await,
        Err(IdentityError::BadAlgorithm("ES384".into()))
    );
    let header = json!({"alg": "RS256", "kid": b.issuer.kid()});
    let token = b.issuer.sign_with_header(&header, &payload(&b)).unwrap();
    assert_eq!(
        b.verifier.verify(&token).await,
        Err(IdentityError::BadAlgorithm("RS256".into()))
    );
}

#[tokio::test]
async fn unknown_kid_is_refused_and_missing_kid_uses_the_only_key() {
    let b = builtin();
    let token = b
        .issuer
        .sign_with_header(
            &json!({"alg": "ES256", "kid": "rotated-away"}),
            &payload(&b),
        )
        .unwrap();
    assert_eq!(
        b.verifier.verify(&token).await,
        Err(IdentityError::UnknownKey("rotated-away".into()))
    );
    let token = b
        .issuer
        .sign_with_header(&json!({"alg": "ES256"}), &payload(&b))
        .unwrap();
    assert!(b.verifier.verify(&token).await.is_ok());
}

#[tokio::test]
async fn malformed_credentials_are_refused() {
    let b = builtin();
    let v = &b.verifier;
    assert_eq!(v.verify("  ").await, Err(IdentityError::Missing));
    assert!(matches!(
        v.verify("abc").await,
        Err(IdentityError::Malformed(_))
    ));
    assert!(matches!(
        v.verify("a.b.c.d.e").await,
        Err(IdentityError::Malformed(_))
    ));
    assert!(matches!(
        v.verify("!!.??.x").await,
        Err(IdentityError::Malformed(_))
    ));
    let long = format!("{}.x.y", "a".repeat(MAX_CREDENTIAL_LEN));
    assert!(matches!(
        v.verify(&long).await,
        Err(IdentityError::Malformed(_))
    ));
    let header = json!({"alg": "ES256", "kid": b.issuer.kid(), "crit": ["exp"]});
    let token = b.issuer.sign_with_header(&header, &payload(&b)).unwrap();
    assert!(matches!(
        v.verify(&token).await,
        Err(IdentityError::Malformed(_))
    ));
}

#[tokio::test]
async fn groups_come_from_configured_claims_only() {
    let mut cfg = issuer_cfg("builtin", None, &[]);
    cfg.groups_claims = vec!["roles".into()];
    cfg.subject_claim = Some("oid".into());
    let b = builtin_with(cfg);
    let mut p = payload(&b);
    p["roles"] = json!(["Deploy.Write", 7, {"x": 1}, "Reader", "Reader"]);
    p["groups"] = json!(["ignored"]);
    p["oid"] = json!("00000000-1111");
    p["appid"] = json!("app-123");
    p["name"] = json!("Deploy Bot");
    let id = b.verifier.verify(&forge(&b, &p)).await.unwrap();
    assert_eq!(
        id.groups,
        vec!["Deploy.Write".to_string(), "Reader".to_string()]
    );
    assert_eq!(id.subject, "00000000-1111");
    assert_eq!(id.claims.get("appid").map(String::as_str), Some("app-123"));
    assert_eq!(id.display_name.as_deref(), Some("Deploy Bot"));
    // A single string is one group; other shapes are ignored.
    p["roles"] = json!("Solo");
    let id = b.verifier.verify(&forge(&b, &p)).await.unwrap();
    assert_eq!(id.groups, vec!["Solo".to_string()]);
    p["roles"] = json!({"not": "a group"});
    let id = b.verifier.verify(&forge(&b, &p)).await.unwrap();
    assert!(id.groups.is_empty());
}

#[tokio::test]
async fn access_key_exchange_verify_revoke() {
    let b = builtin();
    let groups = vec!["dba".to_string()];
    let token = b
        .issuer
        .issue(
            "alice",
            &groups,
            &BTreeMap::new(),
            Duration::from_secs(600),
            "",
        )
        .unwrap();
    let (key, record) = b
        .verifier
        .exchange(&token, Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(key.len() <= 64 && key.len() == ACCESS_KEY_LEN, "{key}");
    assert!(key.starts_with("pcx_"));
    // Bounded by the token's own expiry (600 s), not the requested hour.
    assert!(record.expires_at <= crate::util::now_secs() + 600);
    // The store holds a hash, never the key.
    let stored = b.store.keys.lock().unwrap().clone();
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0].secret_hash, key);
    assert!(!stored[0].secret_hash.contains(&key[key.len() - 10..]));

    let id = b.verifier.verify(&key).await.unwrap();
    assert_eq!(id.method, AuthMethod::AccessKey);
    assert_eq!(
        (id.issuer.as_str(), id.subject.as_str()),
        ("builtin", "alice")
    );
    assert_eq!(id.groups, groups);

    // A key cannot be exchanged again.
    assert!(
        b.verifier
            .exchange(&key, Duration::from_secs(60))
            .await
            .is_err()
    );
    // A near miss is not the key.
    let mut wrong = key.clone();
    let last = if wrong.ends_with('A') { "B" } else { "A" };
    wrong.replace_range(wrong.len() - 1.., last);
    assert_eq!(
        b.verifier.verify(&wrong).await,
        Err(IdentityError::BadAccessKey)
    );

    assert!(access_key::revoke(b.store.as_ref(), &record.id).unwrap());
    assert_eq!(
        b.verifier.verify(&key).await,
        Err(IdentityError::BadAccessKey)
    );
}

#[tokio::test]
async fn expired_access_key_is_refused() {
    let b = builtin();
    let token = b
        .issuer
        .issue("alice", &[], &BTreeMap::new(), Duration::from_secs(600), "")
        .unwrap();
    let (key, _) = b
        .verifier
        .exchange(&token, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(b.verifier.verify(&key).await.is_ok());
    let expire = |r: &mut AccessKeyRecord| r.expires_at = crate::util::now_secs() - 1;
    b.store.keys.lock().unwrap().iter_mut().for_each(expire);
    assert_eq!(
        b.verifier.verify(&key).await,
        Err(IdentityError::BadAccessKey)
    );
}

#[tokio::test]
async fn access_key_lifetime_is_capped_by_the_maximum() {
    let b = builtin();
    let token = b
        .issuer
        .issue(
            "alice",
            &[],
            &BTreeMap::new(),
            Duration::from_secs(7200),
            "",
        )
        .unwrap();
    let store = b.store.as_ref();
    let (_, rec) = access_key::exchange(
        &b.verifier,
        store,
        &token,
        Duration::from_secs(3600),
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    assert!(rec.expires_at <= crate::util::now_secs() + 120);
}

#[test]
fn configuration_problems_are_errors() {
    let store: Arc<dyn Store> = Arc::new(MemStore::default());
    let no_builtin = identity_cfg(vec![issuer_cfg("builtin", None, &[])]);
    assert!(Verifier::new(&no_builtin, None, store.clone()).is_err());
    let no_aud = identity_cfg(vec![issuer_cfg("ext", Some("https://idp"), &[])]);
    assert!(Verifier::new(&no_aud, None, store.clone()).is_err());
    let twice = identity_cfg(vec![
        issuer_cfg("a", Some("https://idp"), &["x"]),
        issuer_cfg("b", Some("https://idp"), &["x"]),
    ]);
    assert!(Verifier::new(&twice, None, store).is_err());
}
