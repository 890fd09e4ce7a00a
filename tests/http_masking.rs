//! Masking of HTTP API responses: JSON path rules (`$.value`, `$..connectionString`,
//! `$.properties.primaryKey`, `$.keys[*].value`) and the masking engine's detectors, through
//! the gateway with curl against the Python backend's ARM and Key Vault-shaped JSON. A group
//! exempt from the block reads the values; a body the gateway cannot mask (compressed although
//! it asked for it plain) is withheld.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::http::{Backend, HttpGw, RG, api_key, split, start};

const POLICY: &str = r#"
@id("connect")
permit(principal in Group::"ci", action == Action::"connect", resource);
@id("reads")
permit(principal in Group::"ci", action == Action::"http.read", resource);
"#;

const MASKING: &str = r#"
[[masking]]
connections = ["arm"]
detectors = ["card", "email", "secret"]
json_paths = ["$.value", "$..connectionString", "$.properties.primaryKey", "$.keys[*].value"]
unmasked_groups = ["dpo"]
"#;

fn gateway() -> (Backend, HttpGw) {
    let backend = Backend::start();
    let gw = start(&backend, POLICY, &api_key(), MASKING);
    (backend, gw)
}

fn get(gw: &HttpGw, token: &str, path: &str) -> serde_json::Value {
    let (body, status) = split(&gw.curl(token, &[], path));
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

fn redacted(v: &serde_json::Value) -> bool {
    v.as_str().is_some_and(|s| s.starts_with("[REDACTED"))
}

/// Secrets in ARM and Key Vault responses come back masked, by path rule and by detector;
/// everything else comes back as the target sent it, and the document stays JSON.
#[test]
fn secrets_in_json_responses_are_masked_by_path_and_detector() {
    let (_backend, gw) = gateway();
    let ci = gw.gw.token("pipeline-7", &["ci"]);

    let kv = get(&gw, &ci, "/secrets/db-password");
    assert!(redacted(&kv["value"]), "{kv}");
    assert_eq!(kv["id"], "https://vault.example/secrets/db-password/1");
    assert_eq!(kv["attributes"]["enabled"], true);

    let rg = get(&gw, &ci, RG);
    assert!(redacted(&rg["properties"]["primaryKey"]), "{rg}");
    assert!(!rg.to_string().contains("ada@example.com"), "{rg}");
    assert_eq!(rg["name"], "rg-prod");

    let keys = get(
        &gw,
        &ci,
        &format!("{RG}/providers/Microsoft.Storage/storageAccounts/acct/listKeys"),
    );
    for k in keys["keys"].as_array().unwrap() {
        assert!(redacted(&k["value"]), "{keys}");
    }
    assert_eq!(keys["keys"][1]["keyName"], "key2");

    let cs = get(
        &gw,
        &ci,
        &format!("{RG}/providers/Microsoft.Web/sites/app/config/connectionstrings"),
    );
    let text = cs.to_string();
    assert!(!text.contains("Hunter2-Prod!"), "{text}");
    assert!(text.contains("orders.database.windows.net"), "{text}");

    let ends = gw
        .gw
        .audit_until(&["--kind", "command_end"], |e| e.len() >= 4);
    let masked: Vec<_> = ends.iter().map(|e| e["detail"]["masked"].clone()).collect();
    assert_eq!(masked[0]["column:$.value"], 1, "{masked:?}");
    assert_eq!(masked[2]["column:$.keys[*].value"], 2, "{masked:?}");
    assert!(masked[3]["values"].as_u64().unwrap() >= 1, "{masked:?}");
}

/// The group the block exempts reads the values as the target sent them.
#[test]
fn an_exempt_group_reads_the_values() {
    let (_backend, gw) = gateway();
    let dpo = gw.gw.token("privacy-officer", &["ci", "dpo"]);
    let kv = get(&gw, &dpo, "/secrets/db-password");
    assert_eq!(kv["value"], "kv-db-password-s3cr3t-value");
    let rg = get(&gw, &dpo, RG);
    assert_eq!(rg["properties"]["primaryKey"], "pk-7f3a9c2e41b8");
}

/// The gateway asks for bodies it masks uncompressed; a target that gzips anyway has its body
/// decoded and masked (sent on uncompressed), and a body in a coding the gateway cannot
/// decode is withheld from a masked caller (502), never passed on unmasked. An exempt caller
/// gets it as sent.
#[test]
fn compressed_bodies_are_decoded_to_be_masked_or_withheld() {
    let (backend, gw) = gateway();
    let ci = gw.gw.token("pipeline-7", &["ci"]);
    let r = gw.curl(&ci, &["-i"], "/gzip/secrets/db-password");
    assert!(r.stdout.starts_with("HTTP/1.1 200"), "{}", r.stdout);
    assert!(
        !r.stdout.to_ascii_lowercase().contains("content-encoding"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("s3cr3t"), "{}", r.stdout);
    assert!(r.stdout.contains("REDACTED"), "{}", r.stdout);
    let reqs = backend.requests();
    assert_eq!(
        Backend::header(&reqs[0], "accept-encoding").as_deref(),
        Some("identity")
    );

    // Brotli, the same.
    let r = gw.curl(&ci, &["-i"], "/br/secrets/db-password");
    assert!(r.stdout.starts_with("HTTP/1.1 200"), "{}", r.stdout);
    assert!(!r.stdout.contains("s3cr3t"), "{}", r.stdout);
    assert!(r.stdout.contains("REDACTED"), "{}", r.stdout);
    assert!(
        r.stdout.contains("vault.example/secrets/db-password"),
        "{}",
        r.stdout
    );

    let (body, status) = split(&gw.curl(&ci, &[], "/compress/secrets/db-password"));
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("cannot decode"), "{body}");

    let dpo = gw.gw.token("privacy-officer", &["ci", "dpo"]);
    let (body, status) = split(&gw.curl(&dpo, &["--compressed"], "/gzip/secrets/db-password"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("kv-db-password-s3cr3t-value"), "{body}");
}

/// With `record_headers` and `record_body_bytes`, each exchange's headers and the first bytes
/// of its bodies are in its `command_end`: credentials redacted, values masked as the
/// caller's response is (a value the cut falls in masked whole); `portcullis replay` prints
/// them. The caller's token and the held key are in no recording.
#[test]
fn exchanges_are_recorded_masked_and_replayed() {
    let backend = Backend::start();
    let policy = format!(
        "{POLICY}\n@id(\"writes\")\npermit(principal in Group::\"ci\", \
         action == Action::\"http.write\", resource);"
    );
    let http = format!(
        "{}\nrecord_headers = true\nrecord_body_bytes = 40",
        api_key()
    );
    let gw = start(&backend, &policy, &http, MASKING);
    let ci = gw.gw.token("pipeline-7", &["ci"]);
    let kv = get(&gw, &ci, "/secrets/db-password");
    assert!(redacted(&kv["value"]), "{kv}");
    // The e-mail straddles the 40-byte cut.
    let note = r#"{"note":"call the owner at ada@example.com","n":1}"#;
    let r = gw.curl(
        &ci,
        &[
            "-X",
            "PUT",
            "-H",
            "content-type: application/json",
            "-d",
            note,
        ],
        &format!("{RG}/tags/default"),
    );
    assert!(r.stdout.ends_with("200"), "{}", r.stdout);

    let ends = gw
        .gw
        .audit_until(&["--kind", "command_end"], |e| e.len() >= 2);
    let all = serde_json::to_string(&ends).unwrap();
    for leak in [
        &ci[..],
        "s3cr3t",
        "ada@",
        "example.com",
        support::http::HELD_KEY,
    ] {
        assert!(!all.contains(leak), "{leak} recorded: {all}");
    }
    let x = &ends[0]["detail"]["exchange"];
    let has = |side: &str, name: &str, value: &str| {
        x[side]["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h[0] == name && h[1].as_str().unwrap().contains(value))
    };
    assert!(has("request", "authorization", "[REDACTED]"), "{x}");
    assert!(has("request", "user-agent", "curl/"), "{x}");
    assert!(has("response", "content-type", "application/json"), "{x}");
    let resp = x["response"]["body"]["text"].as_str().unwrap();
    assert!(resp.starts_with("{\"value\":\"[REDACTED"), "{resp}");
    assert!(resp.len() <= 40, "{resp}");
    let put = &ends[1]["detail"]["exchange"]["request"]["body"];
    let text = put["text"].as_str().unwrap();
    assert!(text.starts_with(r#"{"note":"call the owner at "#), "{put}");
    assert!(text.len() <= 40, "{put}");
    assert_eq!(put["truncated"], true, "{put}");

    let mut shown = String::new();
    for end in &ends {
        let r = gw
            .gw
            .cli(&["replay", end["session"].as_str().unwrap(), "--no-wait"]);
        assert!(r.ok, "{}", r.stderr);
        shown.push_str(&r.stdout);
    }
    assert!(shown.contains("> authorization: [REDACTED]"), "{shown}");
    assert!(
        shown.contains("< content-type: application/json"),
        "{shown}"
    );
    assert!(
        shown.contains("> {\"note\":\"call the owner at "),
        "{shown}"
    );
    assert!(!shown.contains(&ci), "{shown}");
}
