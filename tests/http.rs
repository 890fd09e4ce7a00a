//! The HTTPS API gateway end to end: curl through the gateway to a real HTTP server
//! (`tests/http/backend.py`, ARM and Key Vault-shaped JSON) that logs what reaches it.
//! Each request is decided by method and normalised path, the held credential replaces the
//! caller's token, approvals let a request through once, and refusals never reach the
//! target.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::http::{Backend, HELD_KEY, HttpGw, RG, SUB, api_key, split, start};

/// ARM and Key Vault rules, on lower-cased paths (the connection is case-insensitive, as
/// ARM is).
pub const POLICY: &str = r#"
@id("connect")
permit(principal in Group::"ci", action == Action::"connect", resource);

@id("reads")
permit(principal in Group::"ci", action == Action::"http.read", resource);

@id("key-vault-secrets")
@reason("Key Vault secrets are read by the kv-readers group only")
forbid(principal, action == Action::"http.read", resource)
when { context.path like "/secrets/*" }
unless { principal in Group::"kv-readers" };

@id("writes")
permit(principal in Group::"ci", action == Action::"http.write", resource)
unless { context.path like "*/providers/microsoft.authorization/roleassignments/*" };

@id("role-assignments")
@reason("role assignments change who may do what: a second person approves")
@approval("1")
@approvers("approvers")
permit(principal in Group::"ci", action == Action::"http.write", resource)
when { context.path like "*/providers/microsoft.authorization/roleassignments/*" };

@id("resource-group-delete")
@reason("deleting a resource group deletes everything in it: a second person approves")
@approval("1")
@approvers("approvers")
permit(principal in Group::"ci", action == Action::"http.delete", resource)
when { context.path like "/subscriptions/*/resourcegroups/*" };
"#;

/// The `command` events with `verdict`.
fn verdicts(gw: &HttpGw, verdict: &str) -> Vec<serde_json::Value> {
    gw.gw
        .audit(&["--kind", "command"])
        .into_iter()
        .filter(|e| e["verdict"] == verdict)
        .collect()
}

fn gateway() -> (Backend, HttpGw) {
    let backend = Backend::start();
    let gw = start(&backend, POLICY, &api_key(), "");
    (backend, gw)
}

/// A read reaches the backend with the key the gateway holds; the caller's token does not
/// reach it in any header; the exchange is on record with its status and size.
#[test]
fn a_read_reaches_the_target_with_the_held_key_never_the_callers_token() {
    let (backend, gw) = gateway();
    let token = gw.gw.token("pipeline-7", &["ci"]);
    let (body, status) = split(&gw.curl(&token, &[], RG));
    assert_eq!(status, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["name"], "rg-prod");

    let reqs = backend.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0]["method"], "GET");
    assert_eq!(reqs[0]["path"], RG);
    assert_eq!(
        Backend::header(&reqs[0], "x-api-key").as_deref(),
        Some(HELD_KEY)
    );
    assert_eq!(Backend::header(&reqs[0], "authorization"), None);
    assert!(!reqs[0].to_string().contains(&token), "{}", reqs[0]);
    assert_eq!(
        Backend::header(&reqs[0], "host").as_deref(),
        Some(format!("127.0.0.1:{}", backend.port).as_str())
    );

    let cmds = gw.gw.audit(&["--kind", "command"]);
    assert_eq!(cmds.len(), 1, "{cmds:?}");
    assert_eq!(cmds[0]["action"], "http.read");
    assert_eq!(cmds[0]["protocol"], "http");
    assert_eq!(cmds[0]["statement"], format!("GET {RG}"));
    let ends = gw
        .gw
        .audit_until(&["--kind", "command_end"], |e| !e.is_empty());
    assert_eq!(ends[0]["detail"]["status"], 200, "{ends:?}");
    assert_eq!(
        ends[0]["detail"]["response_bytes"].as_u64(),
        Some(body.len() as u64)
    );
}

/// No token, a malformed one, or a token from nobody the gateway trusts: 401, and the
/// backend never hears of it.
#[test]
fn requests_without_a_valid_token_are_refused_before_the_target() {
    let (backend, gw) = gateway();
    let r = gw.curl("", &["-i"], RG);
    assert!(r.stdout.starts_with("HTTP/1.1 401"), "{}", r.stdout);
    assert!(
        r.stdout
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{}",
        r.stdout
    );
    let (_, status) = split(&gw.curl("not-a-token", &[], RG));
    assert_eq!(status, 401);
    let (_, status) = split(&gw.curl("", &["-H", "Authorization: Basic YTpi"], RG));
    assert_eq!(status, 401);
    assert!(backend.requests().is_empty());
    let failed = gw
        .gw
        .audit_until(&["--kind", "auth_failed"], |e| !e.is_empty());
    assert!(!failed.is_empty());
}

/// A forbidden read is answered 403 with the rule's reason and never reaches the target;
/// the group the rule names reads it.
#[test]
fn a_denied_request_gets_the_rules_reason_and_the_named_group_passes() {
    let (backend, gw) = gateway();
    let ci = gw.gw.token("pipeline-7", &["ci"]);
    let (body, status) = split(&gw.curl(&ci, &[], "/secrets/db-password"));
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("Key Vault secrets are read by the kv-readers group only"),
        "{body}"
    );
    assert!(backend.requests().is_empty());

    let reader = gw.gw.token("vault-job", &["ci", "kv-readers"]);
    let (body, status) = split(&gw.curl(&reader, &[], "/secrets/db-password"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("kv-db-password-s3cr3t-value"), "{body}");
    let denied = verdicts(&gw, "deny");
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["policies"][0], "key-vault-secrets");
}

/// Spellings of a forbidden path (dot segments, encoded dots, repeated slashes, case) are
/// decided as the path they name; ambiguous ones (an encoded `/`, double encoding) are
/// refused. None reaches the target. A harmless dotted path reaches it normalised.
#[test]
fn path_spellings_cannot_dodge_a_rule() {
    let (backend, gw) = gateway();
    let ci = gw.gw.token("pipeline-7", &["ci"]);
    for p in [
        "/x/../secrets/db",
        "/x/%2e%2e/secrets/db",
        "/x/%2E%2e/secrets/db",
        "/x/.%2e/secrets/db",
        "//secrets/db",
        "/./secrets//db",
        "/SECRETS/db",
        "/%73ecrets/db",
    ] {
        let (body, status) = split(&gw.curl(&ci, &[], p));
        assert_eq!(status, 403, "{p}: {body}");
    }
    for p in [
        "/secrets%2fdb",
        "/x%2F..%2Fsecrets/db",
        "/x/%252e%252e/secrets/db",
        "/x/..%5csecrets/db",
        "/x/%00/secrets",
    ] {
        let (body, status) = split(&gw.curl(&ci, &[], p));
        assert_eq!(status, 400, "{p}: {body}");
    }
    // The connection prefix itself is decided on the normalised path.
    let r = gw.curl(&ci, &[], "/../arm/secrets/db");
    assert_eq!(split(&r).1, 403, "{}", r.stdout);
    assert!(backend.requests().is_empty(), "{:?}", backend.requests());

    let (body, status) = split(&gw.curl(&ci, &[], &format!("/customers/..{RG}/./")));
    assert_eq!(status, 200, "{body}");
    let reqs = backend.requests();
    assert_eq!(reqs[0]["path"], format!("{RG}/"));
}

/// Deleting a resource group needs a second person: the first try is refused naming the
/// approval, nothing reaches the target; once approved the same request runs, once.
#[test]
fn a_resource_group_delete_waits_for_approval_and_runs_once() {
    let (backend, gw) = gateway();
    let ci = gw.gw.token("pipeline-7", &["ci"]);
    let r = gw.curl(&ci, &["-i", "-X", "DELETE"], RG);
    assert!(r.stdout.starts_with("HTTP/1.1 403"), "{}", r.stdout);
    let id = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("x-portcullis-approval: "))
        .expect("the approval id")
        .trim()
        .to_string();
    assert!(r.stdout.contains("ApprovalRequired"), "{}", r.stdout);
    assert!(
        r.stdout.contains("send the same request again"),
        "{}",
        r.stdout
    );
    // Another spelling of the same delete is the same request: still waiting.
    let upper = RG.replace("resourceGroups", "RESOURCEGROUPS");
    let (body, status) = split(&gw.curl(&ci, &["-X", "DELETE"], &upper));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains(&id), "{body}");
    assert!(backend.requests().is_empty());

    let approver = gw.gw.token("lead", &["approvers"]);
    let a = gw
        .gw
        .cli(&["approvals", "--token", &approver, "approve", &id]);
    assert!(a.ok, "{}", a.stderr);

    let (body, status) = split(&gw.curl(&ci, &["-X", "DELETE"], RG));
    assert_eq!(status, 202, "{body}");
    let (body, status) = split(&gw.curl(&ci, &["-X", "DELETE"], RG));
    assert_eq!(status, 403, "the approval is used once: {body}");
    let deletes: Vec<_> = backend
        .requests()
        .into_iter()
        .filter(|r| r["method"] == "DELETE")
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    let allowed = verdicts(&gw, "allow");
    assert_eq!(allowed.len(), 1, "{allowed:?}");
    assert_eq!(allowed[0]["approval"], id.as_str());
}

/// An approval is for the request's body as well as its method and path: another body
/// needs its own approval, and the approved one reaches the target as approved.
#[test]
fn an_approval_is_bound_to_the_request_body() {
    let (backend, gw) = gateway();
    let ci = gw.gw.token("pipeline-7", &["ci"]);
    let path = format!(
        "{SUB}/providers/Microsoft.Authorization/roleAssignments/0a1b2c3d?api-version=2022-04-01"
    );
    let approved = r#"{"properties":{"roleDefinitionId":"reader","principalId":"p1"}}"#;
    let other = r#"{"properties":{"roleDefinitionId":"owner","principalId":"p1"}}"#;
    let put = |body: &str| {
        gw.curl(
            &ci,
            &[
                "-i",
                "-X",
                "PUT",
                "-H",
                "content-type: application/json",
                "--data-binary",
                body,
            ],
            &path,
        )
    };
    let r = put(approved);
    assert!(r.stdout.starts_with("HTTP/1.1 403"), "{}", r.stdout);
    let id = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("x-portcullis-approval: "))
        .expect("approval id")
        .trim()
        .to_string();
    let approver = gw.gw.token("lead", &["approvers"]);
    assert!(
        gw.gw
            .cli(&["approvals", "--token", &approver, "approve", &id])
            .ok
    );
    let r = put(other);
    assert!(r.stdout.starts_with("HTTP/1.1 403"), "{}", r.stdout);
    assert!(!r.stdout.contains(&id), "another body, another approval");
    assert!(backend.requests().is_empty());
    let r = put(approved);
    assert!(r.stdout.starts_with("HTTP/1.1 200"), "{}", r.stdout);
    let reqs = backend.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0]["method"], "PUT");
    assert_eq!(reqs[0]["body_len"], approved.len());
}

/// Writes stream both ways: a 12 MB upload reaches the target whole (its digest checked
/// there), and a streamed response reaches the client chunk by chunk, not at its end.
#[test]
fn bodies_stream_both_ways() {
    let (backend, gw) = gateway();
    let ci = gw.gw.token("pipeline-7", &["ci"]);
    let file = gw.gw.scratch.0.join("upload.bin");
    let data: Vec<u8> = (0..12 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let path = format!("{RG}/providers/Microsoft.Storage/blobs/upload");
    let file_arg = format!("@{}", file.display());
    let (body, status) = split(&gw.curl(&ci, &["-X", "PUT", "--data-binary", &file_arg], &path));
    assert_eq!(status, 200, "{body}");
    let sha = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&data))
    };
    let reqs = backend.requests();
    assert_eq!(reqs[0]["body_sha256"], sha.as_str());
    // Chunked upload (no length known in advance).
    let (body, status) = split(&gw.curl(
        &ci,
        &[
            "-X",
            "PUT",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &file_arg,
        ],
        &path,
    ));
    assert_eq!(status, 200, "{body}");
    assert_eq!(backend.requests()[1]["body_sha256"], sha.as_str());

    // The backend sends five chunks 300 ms apart; the first must arrive long before the
    // last is sent.
    let started = std::time::Instant::now();
    let mut child = std::process::Command::new("curl")
        .args(["-sS", "-N", "-H", &format!("Authorization: Bearer {ci}")])
        .arg(gw.url("/stream"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut out, &mut first).unwrap();
    let first_at = started.elapsed();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let all_at = started.elapsed();
    child.wait().unwrap();
    assert!(first.starts_with("chunk-0"), "{first}");
    assert!(rest.contains("chunk-4"), "{rest}");
    assert!(
        all_at - first_at > std::time::Duration::from_millis(900),
        "first chunk at {first_at:?}, all at {all_at:?}: buffered"
    );
}

/// `portcullis replay` prints an HTTP session as a request log: each request as sent, the
/// refused ones with the rule and reason, each answer's status and size.
#[test]
fn replay_prints_the_request_log() {
    let (_backend, gw) = gateway();
    let ci = gw.gw.token("pipeline-7", &["ci"]);
    // Both requests on one client connection: one session.
    let r = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-o", "/dev/null"])
        .args(["-H", &format!("Authorization: Bearer {ci}")])
        .arg(gw.url(RG))
        .arg(gw.url("/secrets/db"))
        .output()
        .unwrap();
    assert!(r.status.success());
    let cmds = gw.gw.audit(&["--kind", "command"]);
    assert_eq!(cmds.len(), 2, "{cmds:?}");
    assert_eq!(cmds[0]["session"], cmds[1]["session"], "one session");
    let session = cmds[0]["session"].as_str().unwrap().to_string();
    gw.gw
        .audit_until(&["--kind", "command_end"], |e| !e.is_empty());
    // The log is complete once the store has indexed the session's events.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let text = loop {
        let out = gw.gw.cli(&["replay", &session, "--no-wait"]);
        assert!(out.ok, "{}", out.stderr);
        if out.stdout.contains("/secrets/db") || std::time::Instant::now() > deadline {
            break out.stdout;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(text.contains(&format!("arm=> GET {RG}")), "{text}");
    assert!(text.contains("HTTP 200, "), "{text}");
    assert!(text.contains("arm=> GET /secrets/db"), "{text}");
    assert!(
        text.contains("DENY by [key-vault-secrets]: Key Vault"),
        "{text}"
    );
}

/// `portcullis policy test --http` reads a request as the gateway does: another spelling of a
/// resource group delete is explained as the held delete it is.
#[test]
fn policy_test_reads_a_request_as_the_gateway_does() {
    let (_backend, gw) = gateway();
    let upper = format!(
        "DELETE {}/./x/..",
        RG.replace("resourceGroups", "RESOURCEGROUPS")
    );
    let r = gw.gw.cli(&[
        "policy",
        "test",
        "--who",
        "pipeline-7",
        "--group",
        "ci",
        "--connection",
        "arm",
        "--action",
        "http",
        "--http",
        &upper,
    ]);
    let out = format!("{}{}", r.stdout, r.stderr);
    assert!(
        out.contains(&format!(
            "request read as DELETE {}/ on 127.0.0.1 (http.delete)",
            RG.to_lowercase()
        )),
        "{out}"
    );
    assert!(out.contains("resource-group-delete"), "{out}");
    let r = gw.gw.cli(&[
        "policy",
        "test",
        "--who",
        "pipeline-7",
        "--group",
        "ci",
        "--connection",
        "arm",
        "--action",
        "http",
        "--http",
        "GET /x/%2e%2e/secrets/db",
    ]);
    let out = format!("{}{}", r.stdout, r.stderr);
    assert!(out.contains("GET /secrets/db"), "{out}");
    assert!(out.contains("key-vault-secrets"), "{out}");
}
