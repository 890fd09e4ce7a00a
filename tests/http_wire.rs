//! The HTTPS API gateway on the wire: request smuggling shapes sent on a raw socket, hop-by-hop
//! headers, HTTP/2 (h2c with curl's prior knowledge, and h2 over TLS by ALPN), a connection
//! chosen by host name, and the held credential as an OAuth 2.0 client-credentials token
//! from a real OpenID provider (node-oidc-provider). The target is the Python backend, which
//! logs what reaches it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::http::{
    Backend, HttpGw, RG, api_key, raw_exchange, split, start, start_tls, tls_files,
};
use support::oidc::Oidc;

const POLICY: &str = r#"
@id("connect")
permit(principal in Group::"ci", action == Action::"connect", resource);
@id("reads")
permit(principal in Group::"ci", action == Action::"http.read", resource);
@id("writes")
permit(principal in Group::"ci", action == Action::"http.write", resource);
@id("key-vault-secrets")
@reason("Key Vault secrets are read by the kv-readers group only")
forbid(principal, action == Action::"http.read", resource)
when { context.path like "/secrets/*" }
unless { principal in Group::"kv-readers" };
"#;

fn gateway() -> (Backend, HttpGw) {
    let backend = Backend::start();
    let gw = start(&backend, POLICY, &api_key(), "");
    (backend, gw)
}

/// Content-Length with Transfer-Encoding: the body is framed by the chunked encoding alone,
/// the connection is closed after the answer (RFC 9112 §6.3), and the target is sent one
/// request framed by the gateway: the bytes a desynchronising proxy would pass on as a
/// second request ("GET /secrets/…") are never read as one.
#[test]
fn content_length_with_transfer_encoding_cannot_smuggle_a_request() {
    let (backend, gw) = gateway();
    let t = gw.gw.token("pipeline-7", &["ci"]);
    let raw = format!(
        "POST /c/arm{RG}/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {t}\r\n\
         Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
         GET /c/arm/secrets/db HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {t}\r\n\r\n"
    );
    let out = raw_exchange(gw.port, raw.as_bytes());
    assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{out}");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let reqs = backend.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0]["method"], "POST");
    assert_eq!(reqs[0]["body_len"], 0);
    // The same with the headers the other way round.
    let raw = format!(
        "POST /c/arm{RG}/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {t}\r\n\
         Transfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n\
         GET /c/arm/secrets/db HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {t}\r\n\r\n"
    );
    let out = raw_exchange(gw.port, raw.as_bytes());
    assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{out}");
    assert_eq!(backend.requests().len(), 2);
    assert!(
        backend.requests().iter().all(|r| r["method"] == "POST"),
        "{:?}",
        backend.requests()
    );
}

/// Two different Content-Lengths, a folded header line (obs-fold), a transfer coding that
/// is not chunked last, and Transfer-Encoding in HTTP/1.0 are each refused with 400 before
/// anything reaches the target.
#[test]
fn ambiguous_framing_is_refused() {
    let (backend, gw) = gateway();
    let t = gw.gw.token("pipeline-7", &["ci"]);
    let head = |extra: &str, version: &str| {
        format!(
            "POST /c/arm{RG}/x {version}\r\nHost: gw\r\nAuthorization: Bearer {t}\r\n{extra}\r\n"
        )
    };
    for (extra, version, body) in [
        (
            "Content-Length: 4\r\nContent-Length: 5\r\n",
            "HTTP/1.1",
            "abcde",
        ),
        (
            "X-Note: a\r\n folded\r\nContent-Length: 4\r\n",
            "HTTP/1.1",
            "abcd",
        ),
        (
            "Transfer-Encoding: chunked, identity\r\n",
            "HTTP/1.1",
            "4\r\nabcd\r\n0\r\n\r\n",
        ),
        (
            "Transfer-Encoding: xchunked\r\n",
            "HTTP/1.1",
            "4\r\nabcd\r\n0\r\n\r\n",
        ),
        (
            "Transfer-Encoding: chunked\r\n",
            "HTTP/1.0",
            "4\r\nabcd\r\n0\r\n\r\n",
        ),
    ] {
        let raw = format!("{}{body}", head(extra, version));
        let out = raw_exchange(gw.port, raw.as_bytes());
        assert!(out.starts_with("HTTP/1.1 400"), "{extra:?}: {out}");
    }
    assert!(backend.requests().is_empty(), "{:?}", backend.requests());
}

/// Hop-by-hop headers, those the client's `Connection` names, and proxy credentials stop at
/// the gateway; end-to-end headers go through.
#[test]
fn hop_by_hop_headers_stop_at_the_gateway() {
    let (backend, gw) = gateway();
    let t = gw.gw.token("pipeline-7", &["ci"]);
    let r = gw.curl(
        &t,
        &[
            "-H",
            "Connection: keep-alive, X-Internal-Route",
            "-H",
            "X-Internal-Route: admin",
            "-H",
            "Keep-Alive: timeout=5",
            "-H",
            "Proxy-Authorization: Basic YWRtaW46YWRtaW4=",
            "-H",
            "TE: trailers",
            "-H",
            "x-ms-client-request-id: 42",
        ],
        RG,
    );
    assert_eq!(split(&r).1, 200, "{}", r.stdout);
    let reqs = backend.requests();
    for h in [
        "x-internal-route",
        "keep-alive",
        "proxy-authorization",
        "te",
        "authorization",
    ] {
        assert_eq!(Backend::header(&reqs[0], h), None, "{h}: {}", reqs[0]);
    }
    assert_eq!(
        Backend::header(&reqs[0], "x-ms-client-request-id").as_deref(),
        Some("42")
    );
}

/// HTTP/2: curl with prior knowledge (h2c on the loopback listener), and h2 over TLS
/// negotiated by ALPN on a TLS listener; both decided and forwarded as HTTP/1.1 does.
#[test]
fn http2_with_prior_knowledge_and_over_tls() {
    let backend = Backend::start();
    let gw = start(&backend, POLICY, &api_key(), "");
    let t = gw.gw.token("pipeline-7", &["ci"]);
    let r = gw.curl(
        &t,
        &[
            "--http2-prior-knowledge",
            "-w",
            "\n%{http_code} %{http_version}",
        ],
        RG,
    );
    assert!(r.stdout.ends_with("\n200 2"), "{} {}", r.stdout, r.stderr);
    assert!(r.stdout.contains("rg-prod"), "{}", r.stdout);
    let r = gw.curl(&t, &["--http2-prior-knowledge"], "/secrets/db");
    assert_eq!(split(&r).1, 403, "{}", r.stdout);

    let dir = support::Scratch::new("http-tls");
    let tls = tls_files(&dir.0);
    let gw = start_tls(&backend, POLICY, &api_key(), "", Some(&tls));
    let t = gw.gw.token("pipeline-7", &["ci"]);
    let url = format!("https://localhost:{}/c/arm{RG}", gw.port);
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let out = std::process::Command::new("curl")
            .args(["-sS", flag, "--cacert"])
            .arg(tls.join("ca.crt"))
            .args(["-H", &format!("Authorization: Bearer {t}")])
            .args(["-o", "/dev/null", "-w", "%{http_code} %{http_version}"])
            .arg(&url)
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            s,
            format!("200 {version}"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Plain HTTP to the TLS listener gets nothing.
    let out = raw_exchange(gw.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(!out.contains("HTTP/1.1 200"), "{out}");
}

/// A connection listing host names is chosen by the client's Host, without a path prefix.
#[test]
fn a_connection_is_chosen_by_host_name() {
    let backend = Backend::start();
    let credential = format!("{}\nhosts = [\"management.gw.test\"]", api_key());
    let gw = start(&backend, POLICY, &credential, "");
    let t = gw.gw.token("pipeline-7", &["ci"]);
    let out = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
        .args([
            "--resolve",
            &format!("management.gw.test:{}:127.0.0.1", gw.port),
        ])
        .args(["-H", &format!("Authorization: Bearer {t}")])
        .arg(format!("http://management.gw.test:{}{RG}", gw.port))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    assert_eq!(backend.requests()[0]["path"], RG);
}

/// The held credential is an access token the gateway obtains from a real OpenID provider
/// with client credentials, cached between requests; the caller's token never reaches the
/// target. A wrong client secret fails the request with 502, before the target.
#[test]
fn the_held_credential_is_an_oauth_client_credentials_token() {
    let backend = Backend::start();
    let oidc = Oidc::start();
    let dir = support::Scratch::new("http-oauth");
    let credential = |secret: &str| {
        let f = dir.0.join(format!("oauth-{}.secret", secret.len()));
        std::fs::write(&f, secret).unwrap();
        format!(
            "oauth = {{ token_url = \"{}\", client_id = \"other-aud\", client_secret_file = \"{}\", resource = \"api://other\" }}\n\
             [connections.http]\nscheme = \"http\"",
            oidc.token_url(),
            f.display()
        )
    };
    let gw = start(&backend, POLICY, &credential("secret"), "");
    let t = gw.gw.token("pipeline-7", &["ci"]);
    for _ in 0..2 {
        assert_eq!(split(&gw.curl(&t, &[], RG)).1, 200);
    }
    let reqs = backend.requests();
    let auths: Vec<String> = reqs
        .iter()
        .map(|r| Backend::header(r, "authorization").expect("a held token"))
        .collect();
    assert_eq!(auths[0], auths[1], "one token, cached");
    let jwt = auths[0].strip_prefix("Bearer ").expect("bearer");
    let claims = {
        use base64::Engine as _;
        let payload = jwt.split('.').nth(1).unwrap();
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&raw).unwrap()
    };
    assert_eq!(claims["client_id"], "other-aud", "{claims}");
    assert_eq!(claims["aud"], "api://other", "{claims}");
    assert!(!reqs.iter().any(|r| r.to_string().contains(&t)));

    let bad = start(&backend, POLICY, &credential("not-the-secret"), "");
    let t = bad.gw.token("pipeline-7", &["ci"]);
    let (body, status) = split(&bad.curl(&t, &[], RG));
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("credential is unavailable"), "{body}");
    assert_eq!(backend.requests().len(), 2, "the target saw nothing more");
}

/// `Expect: 100-continue`: the gateway answers `100 Continue` only once the request is
/// admitted, so a refused request is answered before its body is sent (and never read); an
/// admitted one gets `100 Continue`, then its body goes to the target.
#[test]
fn expect_continue_is_answered_only_after_the_decision() {
    use std::io::{Read as _, Write as _};
    let (backend, gw) = gateway();
    let t = gw.gw.token("pipeline-7", &["ci"]);
    let exchange = |path: &str| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let head = format!(
            "PUT /c/arm{path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {t}\r\n\
             Content-Length: 10\r\nExpect: 100-continue\r\n\r\n"
        );
        s.write_all(head.as_bytes()).unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        let first = String::from_utf8_lossy(&buf[..n]).into_owned();
        if first.starts_with("HTTP/1.1 100") && !first.contains("HTTP/1.1 200") {
            s.write_all(b"0123456789").unwrap();
            let n = s.read(&mut buf).unwrap();
            return (first, String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        (first, String::new())
    };
    // Admitted: a write by the pipeline.
    let (first, second) = exchange(&format!("{RG}/tags/default"));
    assert!(first.starts_with("HTTP/1.1 100 Continue"), "{first}");
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert_eq!(backend.requests()[0]["body_len"], 10);

    // Refused by the request's decision (no rule permits http.delete here), and refused at
    // the session's start (a caller outside `ci`): answered at once, no `100 Continue`.
    let outsider = gw.gw.token("intruder", &["ci-readers"]);
    for (method, token) in [("DELETE", &t), ("PUT", &outsider)] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let head = format!(
            "{method} /c/arm{RG}/tags/default HTTP/1.1\r\nHost: gw\r\n\
             Authorization: Bearer {token}\r\nContent-Length: 10\r\n\
             Expect: 100-continue\r\n\r\n"
        );
        s.write_all(head.as_bytes()).unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(answer.starts_with("HTTP/1.1 403"), "{method}: {answer}");
        assert!(!answer.contains("100 Continue"), "{method}: {answer}");
    }
    assert_eq!(
        backend.requests().len(),
        1,
        "no refused body reached the target"
    );
}

/// A client that leaves while the target has not answered yet: the command still ends in the
/// audit trail, at once, with why.
#[test]
fn a_client_that_leaves_before_the_answer_still_ends_its_command() {
    use std::io::Write as _;
    let (_backend, gw) = gateway();
    let t = gw.gw.token("pipeline-7", &["ci"]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    let head = format!("GET /c/arm/slow HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {t}\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    gw.gw.audit_until(&["--kind", "command"], |e| !e.is_empty());
    let left = std::time::Instant::now();
    drop(s);
    let ends = gw
        .gw
        .audit_until(&["--kind", "command_end"], |e| !e.is_empty());
    assert_eq!(ends.len(), 1, "{ends:?}");
    assert_eq!(
        ends[0]["error"], "the client left before the response",
        "{ends:?}"
    );
    assert_eq!(ends[0]["detail"]["complete"], false, "{ends:?}");
    // Written when the client left, not when the target answered (3 s later).
    assert!(
        left.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        left.elapsed()
    );
}
