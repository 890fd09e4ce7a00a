//! Streams through the Kubernetes API gateway with real kubectl: `get -w` and `logs -f`
//! arrive event by event (not when the stream ends), Secrets are masked in every shape the
//! API returns them in (object, list, Table, watch events), and `kubectl exec` runs over
//! WebSocket, recorded as a terminal session `portcullis replay` plays back. The API server
//! is the test API server (`tests/support/kube.rs` says why).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use base64::Engine as _;
use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::kube::{ApiServer, KubeGw, kubectl_bin, start};

const POLICY: &str = r#"
@id("connect")
permit(principal, action == Action::"connect", resource);

@id("reads")
permit(principal,
       action in [Action::"kube.get", Action::"kube.list", Action::"kube.watch"], resource);

@id("writes-default")
permit(principal, action in [Action::"kube.create", Action::"kube.patch"], resource)
when { context has namespace && context.namespace == "default" };

@id("exec")
permit(principal in Group::"operators", action == Action::"kube.exec", resource);
"#;

/// Secret values are masked for everyone but the `security` group.
const MASKING: &str = r#"
[[masking]]
connections = ["prod"]
detectors = ["secret", "email"]
unmasked_groups = ["security"]
"#;

/// base64("hunter2-s3cret"), the seeded secret's password.
const PASSWORD_B64: &str = "aHVudGVyMi1zM2NyZXQ=";

/// Lines of a running kubectl's stdout, as they come.
fn lines_of(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Wait up to `secs` for a line containing `needle`; every line seen.
fn wait_for(
    rx: &mpsc::Receiver<String>,
    needle: &str,
    secs: u64,
) -> Result<Vec<String>, Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) => {
                let hit = l.contains(needle);
                seen.push(l);
                if hit {
                    return Ok(seen);
                }
            }
            Err(_) => break,
        }
    }
    Err(seen)
}

fn gateway() -> (ApiServer, KubeGw) {
    let api = ApiServer::start();
    let gw = start(&api, POLICY, "", MASKING);
    (api, gw)
}

#[test]
fn secrets_are_masked_in_objects_lists_and_tables() {
    let (_api, gw) = gateway();
    let ci = gw.gw.token("pipeline-7", &["ci"]);
    for args in [
        &["get", "secret", "db-creds", "-o", "yaml"][..],
        &["get", "secrets", "-o", "json"],
        &["get", "secrets", "-A", "-o", "yaml"],
    ] {
        let r = gw.kubectl(&ci, args);
        assert!(r.ok, "{args:?}: {}", r.stderr);
        assert!(r.stdout.contains("db-creds"), "{args:?}: {}", r.stdout);
        assert!(
            !r.stdout.contains(PASSWORD_B64),
            "{args:?} leaked: {}",
            r.stdout
        );
    }
    // Masked values are base64 still, so typed clients decode the object.
    let r = gw.kubectl(
        &ci,
        &[
            "get",
            "secret",
            "db-creds",
            "-o",
            "jsonpath={.data.password}",
        ],
    );
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(r.stdout.trim())
        .unwrap();
    let decoded = String::from_utf8(decoded).unwrap();
    assert!(decoded.contains("REDACTED"), "{decoded}");
    // The Table view still counts the keys.
    let r = gw.kubectl(&ci, &["get", "secret", "db-creds"]);
    assert!(
        r.ok && r.stdout.contains("Opaque"),
        "{} {}",
        r.stdout,
        r.stderr
    );
    // Detectors read ConfigMap values.
    let r = gw.kubectl(&ci, &["get", "configmap", "app-config", "-o", "yaml"]);
    assert!(r.ok, "{}", r.stderr);
    assert!(!r.stdout.contains("Sup3rSecret!"), "{}", r.stdout);
    // The security group sees them as they are.
    let sec = gw.gw.token("auditor", &["security"]);
    let r = gw.kubectl(&sec, &["get", "secret", "db-creds", "-o", "yaml"]);
    assert!(r.stdout.contains(PASSWORD_B64), "{} {}", r.stdout, r.stderr);
    let r = gw.kubectl(&sec, &["get", "configmap", "app-config", "-o", "yaml"]);
    assert!(r.stdout.contains("Sup3rSecret!"), "{}", r.stdout);
    // Audit counts what was masked.
    let ends = gw.gw.audit(&["--kind", "command_end"]);
    assert!(
        ends.iter().any(|e| !e["detail"]["masked"].is_null()),
        "{ends:?}"
    );
}

#[test]
fn watches_and_followed_logs_arrive_as_they_happen() {
    let (_api, gw) = gateway();
    let ci = gw.gw.token("pipeline-7", &["ci"]);
    let mut watch = gw
        .kubectl_cmd(&kubectl_bin(), &ci, &["get", "pods", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = lines_of(&mut watch);
    wait_for(&rx, "web-0", 20).unwrap_or_else(|seen| panic!("no list: {seen:?}"));
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: streamed-1\n  namespace: default\n\
               spec:\n  containers:\n  - name: c\n    image: busybox\n";
    let r = gw.apply(&ci, pod, &[]);
    assert!(r.ok, "{}", r.stderr);
    wait_for(&rx, "streamed-1", 10)
        .unwrap_or_else(|seen| panic!("the watch did not stream: {seen:?}"));
    let _ = watch.kill();
    let _ = watch.wait();

    // Masked watch events: a Secret created while watching shows without its value.
    let mut watch = gw
        .kubectl_cmd(&kubectl_bin(), &ci, &["get", "secrets", "-w", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = lines_of(&mut watch);
    wait_for(&rx, "db-creds", 20).unwrap_or_else(|seen| panic!("no list: {seen:?}"));
    let secret = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: fresh\n  namespace: default\n\
                  stringData:\n  token: watch-me-9c2f\n";
    let r = gw.apply(&ci, secret, &["--server-side"]);
    assert!(r.ok, "{}", r.stderr);
    let seen = wait_for(&rx, "\"fresh\"", 10).unwrap_or_else(|seen| panic!("no event: {seen:?}"));
    std::thread::sleep(Duration::from_millis(300));
    let rest: Vec<String> = rx.try_iter().collect();
    let all = [seen, rest].concat().join("\n");
    assert!(
        !all.contains("watch-me-9c2f") && !all.contains("d2F0Y2gtbWUtOWMyZg"),
        "{all}"
    );
    let _ = watch.kill();
    let _ = watch.wait();

    // `logs -f` streams a line every 200 ms for 20 s: lines arrive long before it ends.
    let started = Instant::now();
    let mut logs = gw
        .kubectl_cmd(&kubectl_bin(), &ci, &["logs", "-f", "web-0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = lines_of(&mut logs);
    for n in 1..=3 {
        wait_for(&rx, &format!("line {n}"), 10)
            .unwrap_or_else(|seen| panic!("no line {n}: {seen:?}"));
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let _ = logs.kill();
    let _ = logs.wait();
}

#[test]
fn exec_runs_over_websocket_and_is_recorded() {
    let (_api, gw) = gateway();
    let ci = gw.gw.token("pipeline-7", &["ci"]);
    let r = gw.kubectl(&ci, &["exec", "web-0", "--", "echo", "hello"]);
    assert!(!r.ok);
    assert!(r.stderr.contains("Forbidden"), "{}", r.stderr);

    let op = gw.gw.token("oncall", &["operators"]);
    let r = gw.kubectl(&op, &["exec", "web-0", "--", "echo", "hello"]);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.stdout.trim(), "hello");
    let r = gw.kubectl_with(
        &kubectl_bin(),
        &op,
        &["exec", "-i", "web-0", "--", "sh"],
        Some("echo hi-from-exec\nexit 3\n"),
    );
    assert!(!r.ok);
    assert!(
        r.stdout.contains("hi-from-exec"),
        "{} {}",
        r.stdout,
        r.stderr
    );
    assert!(r.stderr.contains("exit code 3"), "{}", r.stderr);

    let ends = gw.gw.audit_until(&["--kind", "command_end"], |e| {
        e.iter().any(|e| e["detail"]["exit_status"] == 3)
    });
    let end = ends
        .iter()
        .find(|e| e["detail"]["exit_status"] == 3)
        .unwrap_or_else(|| panic!("{ends:?}"));
    assert!(end["detail"]["recording"].is_string(), "{end}");
    let session = end["session"].as_str().unwrap();
    let r = gw.gw.cli(&["replay", session, "--no-wait"]);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("hi-from-exec"), "{}", r.stdout);
    assert!(r.stdout.contains("/pods/web-0/exec?"), "{}", r.stdout);

    // With a terminal (`-it`, under `script`'s pseudo-terminal of 100x30): kubectl sends
    // the terminal's size, and the recording has the keystrokes, the echo and the size.
    let line = format!(
        "stty cols 100 rows 30; {} --kubeconfig {} exec -it web-0 -- sh",
        kubectl_bin().display(),
        gw.kubeconfig.display()
    );
    let mut child = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("PORTCULLIS_TOKEN", &op)
        .env("HOME", &gw.gw.scratch.0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        stdin.write_all(b"echo typed-in-a-tty\r").unwrap();
        std::thread::sleep(Duration::from_millis(500));
        stdin.write_all(b"exit\r").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("typed-in-a-tty"), "{shown}");
    let ends = gw.gw.audit_until(&["--kind", "command_end"], |e| {
        e.iter()
            .filter(|e| e["detail"]["recording"].is_string())
            .count()
            >= 3
    });
    let rel = ends
        .iter()
        .filter_map(|e| e["detail"]["recording"].as_str())
        .next_back()
        .unwrap()
        .to_string();
    let cast = std::fs::read_to_string(gw.gw.scratch.0.join("state").join(&rel)).unwrap();
    assert!(cast.contains(r#""r", "100x30""#), "{cast}");
    assert!(cast.contains("typed-in-a-tty"), "{cast}");
    assert!(
        cast.lines()
            .any(|l| l.contains(r#""i", "echo typed-in-a-tty"#)),
        "{cast}"
    );

    // No recording, no exec: with the recordings directory unusable, exec is refused.
    let recordings = gw.gw.scratch.0.join("state/recordings");
    std::fs::remove_dir_all(&recordings).unwrap();
    std::fs::write(&recordings, "not a directory").unwrap();
    let refused = gw.kubectl(&op, &["exec", "web-0", "--", "echo", "unrecorded"]);
    assert!(!refused.ok, "{}", refused.stdout);
    assert!(!refused.stdout.contains("unrecorded"), "{}", refused.stdout);
    assert!(
        refused.stderr.contains("cannot be recorded"),
        "{}",
        refused.stderr
    );
    assert!(r.stdout.contains("exit status 3"), "{}", r.stdout);
}
