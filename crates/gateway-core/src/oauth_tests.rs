//! The client-credentials source against a local token endpoint that records each request.

use std::sync::Mutex;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// A token endpoint on a loopback port: answers each request with the next of `answers`
/// (status, body) and keeps the requests.
struct Endpoint {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

async fn endpoint(answers: Vec<(u16, String)>) -> Endpoint {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let kept = requests.clone();
    tokio::spawn(async move {
        let mut answers = answers.into_iter();
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut req = Vec::new();
            let mut buf = [0u8; 2048];
            // Headers, then the body by Content-Length.
            loop {
                let n = sock.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if req.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            kept.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&req).to_string());
            let (status, body) = answers.next().unwrap_or((500, "{}".into()));
            let resp = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        }
    });
    Endpoint { url, requests }
}

fn config(url: &str, dir: &Path) -> OAuthClientConfig {
    std::fs::write(dir.join("secret"), "s3cret\n").unwrap();
    OAuthClientConfig {
        tenant: None,
        token_url: Some(url.to_string()),
        client_id: "gateway-app".into(),
        client_secret_env: None,
        client_secret_file: Some("secret".into()),
        scope: Some("https://database.windows.net/.default".into()),
        resource: None,
    }
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "portcullis-oauth-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[tokio::test]
async fn a_token_is_fetched_with_the_client_secret_and_reused_until_near_expiry() {
    let ep = endpoint(vec![
        (
            200,
            r#"{"access_token":"tok-1","token_type":"Bearer","expires_in":3600}"#.into(),
        ),
        (
            200,
            r#"{"access_token":"tok-2","token_type":"Bearer","expires_in":3600}"#.into(),
        ),
    ])
    .await;
    let dir = tempdir();
    let src = TokenSource::new(&config(&ep.url, &dir), &dir).unwrap();
    assert_eq!(&*src.token().await.unwrap(), "tok-1");
    assert_eq!(&*src.token().await.unwrap(), "tok-1", "cached");
    let reqs = ep.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 1, "one request for two tokens");
    let r = &reqs[0];
    assert!(r.starts_with("POST /token "), "{r}");
    // Basic auth with the client id and the secret as read from its file.
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode("gateway-app:s3cret");
    assert!(
        r.contains(&format!("authorization: Basic {basic}"))
            || r.contains(&format!("Authorization: Basic {basic}")),
        "{r}"
    );
    assert!(r.contains("grant_type=client_credentials"), "{r}");
    assert!(
        r.contains("scope=https%3A%2F%2Fdatabase.windows.net%2F.default"),
        "{r}"
    );
}

#[tokio::test]
async fn a_short_lived_token_is_fetched_again() {
    let ep = endpoint(vec![
        (200, r#"{"access_token":"tok-1","expires_in":1}"#.into()),
        (200, r#"{"access_token":"tok-2","expires_in":3600}"#.into()),
    ])
    .await;
    let dir = tempdir();
    let src = TokenSource::new(&config(&ep.url, &dir), &dir).unwrap();
    assert_eq!(&*src.token().await.unwrap(), "tok-1");
    // Refreshed at half of its one-second life.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(&*src.token().await.unwrap(), "tok-2");
}

#[tokio::test]
async fn refusals_and_bad_answers_are_clear_errors() {
    let ep = endpoint(vec![
        (
            401,
            r#"{"error":"invalid_client","error_description":"bad secret"}"#.into(),
        ),
        (200, r#"{"token_type":"Bearer"}"#.into()),
        (200, r#"{"access_token":"x","token_type":"mac"}"#.into()),
    ])
    .await;
    let dir = tempdir();
    let src = TokenSource::new(&config(&ep.url, &dir), &dir).unwrap();
    let e = src.token().await.unwrap_err();
    assert!(e.contains("invalid_client: bad secret"), "{e}");
    let e = src.token().await.unwrap_err();
    assert!(e.contains("no token"), "{e}");
    let e = src.token().await.unwrap_err();
    assert!(e.contains("not a bearer token"), "{e}");
}

#[test]
fn entra_tenants_name_their_endpoint_and_azure_sqls_scope() {
    let c = OAuthClientConfig {
        tenant: Some("contoso.onmicrosoft.com".into()),
        token_url: None,
        client_id: "a".into(),
        client_secret_env: Some("S".into()),
        client_secret_file: None,
        scope: None,
        resource: None,
    };
    assert_eq!(
        c.endpoint().unwrap(),
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    );
    assert_eq!(c.scope(), Some(crate::config::AZURE_SQL_SCOPE));
}
