//! The gateway logs in to a TDS target with an access token it obtains itself (OAuth 2.0
//! client credentials, as it does against Entra ID for Azure SQL), carried in LOGIN7's
//! FEDAUTH extension.
//!
//! No real Azure SQL or Entra ID can be reached here. The token endpoint is a real OpenID
//! Connect provider (node-oidc-provider, `support::oidc`) speaking the same grant; the target
//! is Microsoft's `mssql-mock-tds`, which records the token each login carried. The client is
//! FreeTDS `tsql` with a Portcullis access key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use base64::Engine as _;
use support::Scratch;
use support::oidc::Oidc;
use support::tds::{
    CUSTOMERS_QUERY, Mock, MockTls, POLICY, TdsGw, start_with_credential, text, tls_files,
};

/// The claims of a JWT, unverified (the test only reads what the issuer put in).
fn claims(jwt: &str) -> serde_json::Value {
    let payload = jwt.split('.').nth(1).expect("a JWT");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&raw).expect("JSON claims")
}

/// A gateway whose `sales` connection logs in to a mock target with a token it obtains from
/// a real OIDC provider as client `other-aud`, with `secret` as its client secret.
fn oauth_gateway(tag: &str, secret: &str) -> (Scratch, Oidc, Mock, TdsGw) {
    let dir = Scratch::new(tag);
    let tls = tls_files(&dir.0);
    let oidc = Oidc::start();
    std::fs::write(dir.0.join("oauth.secret"), secret).unwrap();
    let mock = Mock::start(MockTls::Prelogin, &tls);
    let credential = format!(
        "oauth = {{ token_url = \"{url}\", client_id = \"other-aud\", client_secret_file = \"{secret}\", resource = \"api://other\" }}",
        url = oidc.token_url(),
        secret = dir.0.join("oauth.secret").display(),
    );
    let gw = start_with_credential(mock.addr, &tls, "mandatory", POLICY, &credential, "");
    (dir, oidc, mock, gw)
}

/// Two sessions reach the target with the token the gateway fetched from the issuer (the
/// same token: it is cached), never the caller's key; a wrong client secret refuses the login
/// with a clear message, and the refusal is on record.
#[test]
fn the_target_login_carries_a_token_from_client_credentials() {
    let (_dir, oidc, mock, gw) = oauth_gateway("tds-oauth", "secret\n");
    let key = gw.access_key("pipeline-7", &["ci"]);

    for _ in 0..2 {
        let t = text(&gw.tsql(&key, CUSTOMERS_QUERY));
        assert!(t.contains("Ada Lovelace"), "{t}");
    }
    let logins = mock.connections();
    assert_eq!(logins.len(), 2, "{logins:?}");
    let tokens: Vec<String> = logins
        .iter()
        .map(|c| c.received_token_as_string().expect("a FEDAUTH token"))
        .collect();
    assert_eq!(tokens[0], tokens[1], "one token, cached between sessions");
    let c = claims(&tokens[0]);
    assert_eq!(c["aud"], "api://other", "{c}");
    assert_eq!(c["client_id"], "other-aud", "{c}");
    assert_eq!(c["iss"], oidc.issuer(), "{c}");
    assert!(
        !tokens[0].contains(&key),
        "the caller's key never reaches the target"
    );
    assert!(logins.iter().all(|l| l.authenticated), "{logins:?}");
}

#[test]
fn a_refused_token_request_refuses_the_login_clearly() {
    let (_dir, _oidc, mock, gw) = oauth_gateway("tds-oauth-bad", "not-the-secret");
    let key = gw.access_key("pipeline-7", &["ci"]);
    let t = text(&gw.tsql(&key, CUSTOMERS_QUERY));
    assert!(
        t.contains("the connection's credential is unavailable"),
        "{t}"
    );
    assert!(!t.contains("Ada Lovelace"), "{t}");
    assert!(mock.connections().is_empty(), "the target saw no login");
    // Refusals at login are written within milliseconds, not before the client hears.
    let failed = gw
        .gw
        .audit_until(&["--kind", "auth_failed"], |events| !events.is_empty());
    let why = failed
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(why.contains("refused the token request"), "{why}");
}
