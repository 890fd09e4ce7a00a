//! Azure Blob Storage behind the gateway: Azurite (Microsoft's storage emulator, real Shared
//! Key authentication) as the target, Microsoft's Python SDK (`azure-storage-blob`) as the
//! client with a token credential that sends the caller's Portcullis token. The gateway holds
//! the account key and signs each request; the caller never has it. Policy lets the pipeline
//! create, upload, list and download, holds a blob delete for approval and forbids deleting
//! the container.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::http::{start_named, tls_files};
use support::{Scratch, free_port, root};

/// Azurite's well-known development account and key.
const ACCOUNT: &str = "devstoreaccount1";
const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

const POLICY: &str = r#"
@id("connect")
permit(principal in Group::"ci", action == Action::"connect", resource);
@id("reads")
permit(principal in Group::"ci", action == Action::"http.read", resource);
@id("writes")
permit(principal in Group::"ci", action == Action::"http.write", resource);
@id("blob-delete")
@reason("deleting a blob needs a second person")
@approval("1")
@approvers("approvers")
permit(principal in Group::"ci", action == Action::"http.delete", resource)
when { context.path like "/devstoreaccount1/*/*" };
@id("no-public-containers")
@reason("containers are not made public through the gateway")
forbid(principal, action == Action::"http.write", resource)
when { context.query like "*comp=acl*" };
@id("no-container-delete")
@reason("containers are deleted by the platform team, not pipelines")
forbid(principal, action == Action::"http.delete", resource)
unless { context.path like "/devstoreaccount1/*/*" };
"#;

struct Azurite {
    port: u16,
    child: Child,
    _dir: Scratch,
}

impl Azurite {
    fn start() -> Azurite {
        let dir = Scratch::new("azurite");
        let port = free_port();
        let child = Command::new(root().join("tests/http/node_modules/.bin/azurite-blob"))
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(&dir.0)
            .args(["--silent", "--skipApiVersionCheck"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("azurite (tests/scripts/setup.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "azurite did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Azurite {
            port,
            child,
            _dir: dir,
        }
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run the SDK client through the gateway; one JSON result per step.
fn sdk(url: &str, ca: &std::path::Path, token: &str, steps: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new("python3")
        .arg(root().join("tests/http/blob_client.py"))
        .arg(url)
        .arg(ca)
        .arg(token)
        .args(steps)
        .env("PYTHONPATH", root().join("tests/http/pylib"))
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("step result"))
        .collect()
}

#[test]
fn the_storage_sdk_works_through_the_gateway_which_signs_with_the_held_key() {
    let azurite = Azurite::start();
    let dir = Scratch::new("http-storage");
    let tls = tls_files(&dir.0);
    let key_file = dir.0.join("account.key");
    std::fs::write(&key_file, KEY).unwrap();
    let credential = format!(
        "[connections.http]\nscheme = \"http\"\n\
         shared_key = {{ account = \"{ACCOUNT}\", key_file = \"{}\" }}",
        key_file.display()
    );
    let gw = start_named("blob", azurite.port, POLICY, &credential, "", Some(&tls));
    let url = format!("https://localhost:{}/c/blob/{ACCOUNT}", gw.port);
    let ca = tls.join("ca.crt");
    let ci = gw.gw.token("pipeline-7", &["ci"]);

    let r = sdk(&url, &ca, &ci, &["create", "upload", "list", "download"]);
    for s in &r {
        assert_eq!(s["ok"], true, "{r:?}");
    }
    assert_eq!(
        r[1]["result"], r[3]["result"],
        "the download is what was uploaded"
    );
    assert_eq!(r[2]["result"], serde_json::json!(["2026/q4.bin"]));

    // Making the container public (`?restype=container&comp=acl`) is forbidden, however the
    // query is spelled.
    let r = sdk(&url, &ca, &ci, &["make-public"]);
    assert_eq!(r[0]["status"], 403, "{r:?}");
    assert!(
        r[0]["error"].as_str().unwrap().contains("not made public"),
        "{r:?}"
    );
    let spelled = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
        .args(["--cacert"])
        .arg(&ca)
        .args(["-H", &format!("Authorization: Bearer {ci}")])
        .args(["-H", "x-ms-blob-public-access: container"])
        .arg(format!("{url}/reports?comp=%61cl&restype=container"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&spelled.stdout), "403");

    // Deleting the container is forbidden; deleting the blob waits for approval.
    let r = sdk(&url, &ca, &ci, &["delete-container", "delete-blob"]);
    assert_eq!(r[0]["status"], 403, "{r:?}");
    assert!(
        r[0]["error"].as_str().unwrap().contains("platform team"),
        "{r:?}"
    );
    assert_eq!(r[1]["status"], 403, "{r:?}");
    assert!(
        r[1]["error"].as_str().unwrap().contains("needs approval"),
        "{r:?}"
    );
    let r = sdk(&url, &ca, &ci, &["list"]);
    assert_eq!(
        r[0]["result"],
        serde_json::json!(["2026/q4.bin"]),
        "still there"
    );

    let pending = gw.gw.cli(&[
        "approvals",
        "--token",
        &gw.gw.token("lead", &["approvers"]),
        "list",
        "--state",
        "pending",
        "--json",
    ]);
    let list: Vec<serde_json::Value> = serde_json::from_str(&pending.stdout).unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    let id = list[0]["id"].as_str().unwrap();
    let lead = gw.gw.token("lead", &["approvers"]);
    assert!(
        gw.gw
            .cli(&["approvals", "--token", &lead, "approve", id])
            .ok
    );
    let r = sdk(&url, &ca, &ci, &["delete-blob", "list"]);
    assert_eq!(r[0]["ok"], true, "{r:?}");
    assert_eq!(r[1]["result"], serde_json::json!([]), "{r:?}");

    // The caller's token is refused by the storage service itself: the gateway's signature
    // is what it accepts.
    let direct = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["-H", &format!("Authorization: Bearer {ci}")])
        .arg(format!(
            "http://127.0.0.1:{}/{ACCOUNT}?comp=list",
            azurite.port
        ))
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&direct.stdout), "200");
}
