//! Streams through the Kubernetes API gateway with real kubectl: `get -w` and `logs -f`
//! arrive event by event (not when the stream ends), Secrets are masked in every shape the
//! API returns them in (object, list, Table, watch events), and `kubectl exec` and `attach`
//! run over WebSocket or SPDY, recorded as terminal sessions `portcullis replay` plays back;
//! an allowed port-forward carries bytes. The API server is the test API server
//! (`tests/support/kube.rs` says why).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use base64::Engine as _;
use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use std::path::PathBuf;

use support::Run;
use support::kube::{ApiServer, KubeGw, kubectl_bin, kubectl_versions, start};

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
permit(principal in Group::"operators",
       action in [Action::"kube.exec", Action::"kube.attach", Action::"kube.portforward"],
       resource);
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

/// A kubectl and the environment it runs with.
struct Kubectl {
    bin: PathBuf,
    env: Vec<(&'static str, &'static str)>,
}

impl Kubectl {
    /// The default kubectl (1.30 or later: exec over WebSocket).
    fn websocket() -> Kubectl {
        Kubectl {
            bin: kubectl_bin(),
            env: Vec::new(),
        }
    }

    /// A kubectl that execs over SPDY/3.1: 1.27 where the machine has it, else the default
    /// one with its WebSocket feature gate off.
    fn spdy() -> Kubectl {
        match kubectl_versions().into_iter().find(|(v, _)| v == "1.27") {
            Some((_, bin)) => Kubectl {
                bin,
                env: Vec::new(),
            },
            None => Kubectl {
                bin: kubectl_bin(),
                env: vec![("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")],
            },
        }
    }

    fn run(&self, gw: &KubeGw, token: &str, args: &[&str], stdin: Option<&str>) -> Run {
        gw.kubectl_env(&self.bin, &self.env, token, args, stdin)
    }
}

/// The last command_end with a recording once `n` such ends were written: the event and
/// the recording's text.
fn nth_recording(gw: &KubeGw, n: usize) -> (serde_json::Value, String) {
    let ends = gw.gw.audit_until(&["--kind", "command_end"], |e| {
        e.iter()
            .filter(|e| e["detail"]["recording"].is_string())
            .count()
            >= n
    });
    let end = ends
        .iter()
        .filter(|e| e["detail"]["recording"].is_string())
        .nth(n - 1)
        .unwrap_or_else(|| panic!("{ends:?}"))
        .clone();
    let rel = end["detail"]["recording"].as_str().unwrap();
    let cast = std::fs::read_to_string(gw.gw.scratch.0.join("state").join(rel)).unwrap();
    (end, cast)
}

/// `exec -i sh` exiting 3, then `exec -it sh` under a 100x30 pseudo-terminal, with
/// `kubectl`: both recorded (the `n`th and `n+1`th recordings), the first replayable.
fn exec_sessions_are_recorded(gw: &KubeGw, kubectl: &Kubectl, op: &str, n: usize) {
    let r = kubectl.run(
        gw,
        op,
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
    let (end, cast) = nth_recording(gw, n);
    assert_eq!(end["detail"]["exit_status"], 3, "{end}");
    assert!(cast.contains("hi-from-exec"), "{cast}");
    assert!(
        cast.lines()
            .any(|l| l.contains(r#""i", "echo hi-from-exec"#)),
        "{cast}"
    );
    let session = end["session"].as_str().unwrap();
    let r = gw.gw.cli(&["replay", session, "--no-wait"]);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("hi-from-exec"), "{}", r.stdout);
    assert!(r.stdout.contains("/pods/web-0/exec?"), "{}", r.stdout);
    assert!(r.stdout.contains("exit status 3"), "{}", r.stdout);

    // With a terminal (`-it`, under `script`'s pseudo-terminal of 100x30): kubectl sends
    // the terminal's size, and the recording has the keystrokes, the echo and the size.
    let line = format!(
        "stty cols 100 rows 30; {} --kubeconfig {} exec -it web-0 -- sh",
        kubectl.bin.display(),
        gw.kubeconfig.display()
    );
    let mut child = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .envs(kubectl.env.iter().copied())
        .env("PORTCULLIS_TOKEN", op)
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
    let (end, cast) = nth_recording(gw, n + 1);
    assert_eq!(end["detail"]["exit_status"], 0, "{end}");
    assert!(cast.contains(r#""r", "100x30""#), "{cast}");
    assert!(cast.contains("typed-in-a-tty"), "{cast}");
    assert!(
        cast.lines()
            .any(|l| l.contains(r#""i", "echo typed-in-a-tty"#)),
        "{cast}"
    );
}

#[test]
fn exec_runs_over_websocket_and_is_recorded() {
    let (api, gw) = gateway();
    let ci = gw.gw.token("pipeline-7", &["ci"]);
    let r = gw.kubectl(&ci, &["exec", "web-0", "--", "echo", "hello"]);
    assert!(!r.ok);
    assert!(r.stderr.contains("Forbidden"), "{}", r.stderr);

    let op = gw.gw.token("oncall", &["operators"]);
    let r = gw.kubectl(&op, &["exec", "web-0", "--", "echo", "hello"]);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.stdout.trim(), "hello");
    exec_sessions_are_recorded(&gw, &Kubectl::websocket(), &op, 2);
    let upgrades = api.upgrades();
    assert_eq!(upgrades.len(), 3, "{upgrades:?}");
    assert!(upgrades.iter().all(|u| u == &["websocket"]), "{upgrades:?}");

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
}

/// kubectl before 1.30 (and later ones with WebSocket turned off) exec over SPDY/3.1: the
/// gateway reads the SPDY streams and records them the same way. Attach is recorded too,
/// and an allowed port-forward carries bytes both ways.
#[test]
fn exec_over_spdy_attach_and_port_forward() {
    let (api, gw) = gateway();
    let op = gw.gw.token("oncall", &["operators"]);
    let spdy = Kubectl::spdy();
    let r = spdy.run(&gw, &op, &["exec", "web-0", "--", "echo", "hello"], None);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.stdout.trim(), "hello");
    let (end, cast) = nth_recording(&gw, 1);
    assert_eq!(end["detail"]["exit_status"], 0, "{end}");
    assert!(cast.contains("hello"), "{cast}");
    exec_sessions_are_recorded(&gw, &spdy, &op, 2);
    let upgrades = api.upgrades();
    assert_eq!(upgrades.len(), 3, "{upgrades:?}");
    assert!(upgrades.iter().all(|u| u == &["SPDY/3.1"]), "{upgrades:?}");

    // kubectl 1.30+ against a node that refuses WebSocket (400) falls back to SPDY: the
    // fallback goes through the gateway and is recorded like any exec.
    let legacy = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: legacy-0\n  namespace: default\n  \
                  annotations:\n    test.portcullis.dev/spdy-only: \"true\"\nspec:\n  \
                  containers:\n  - name: app\n    image: busybox\n";
    let r = gw.apply(&op, legacy, &[]);
    assert!(r.ok, "{} {}", r.stdout, r.stderr);
    let r = gw.kubectl(&op, &["exec", "legacy-0", "--", "echo", "fell-back"]);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.stdout.trim(), "fell-back");
    let tried: Vec<(u64, Vec<String>)> = api
        .requests()
        .into_iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .unwrap_or("")
                .contains("/pods/legacy-0/exec")
        })
        .map(|r| {
            (
                r["status"].as_u64().unwrap_or(0),
                ApiServer::header(&r, "upgrade"),
            )
        })
        .collect();
    assert_eq!(
        tried,
        [
            (400, vec!["websocket".to_string()]),
            (101, vec!["SPDY/3.1".to_string()])
        ]
    );
    let (end, cast) = nth_recording(&gw, 4);
    assert_eq!(end["detail"]["exit_status"], 0, "{end}");
    assert!(cast.contains("fell-back"), "{cast}");

    // A stream protocol the recorder does not read is refused before the API server.
    let (body, status) = gw.curl_with(
        &op,
        "POST",
        "/c/prod/api/v1/namespaces/default/pods/web-0/exec?command=sh&stdout=true",
        &[
            "--http1.1",
            "-H",
            "Connection: Upgrade",
            "-H",
            "Upgrade: SPDY/3.1",
            "-H",
            "X-Stream-Protocol-Version: base64.channel.k8s.io",
        ],
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("cannot be recorded"), "{body}");
    assert_eq!(api.upgrades().len(), 4);

    // Attach (the stand-in attaches to a fresh shell) is decided as kube.attach and recorded.
    let r = gw.kubectl_with(
        &kubectl_bin(),
        &op,
        &["attach", "-i", "web-0"],
        Some("echo attached-here\nexit 0\n"),
    );
    assert!(
        r.stdout.contains("attached-here"),
        "{} {}",
        r.stdout,
        r.stderr
    );
    let (end, cast) = nth_recording(&gw, 5);
    assert!(cast.contains("attach default/web-0"), "{cast}");
    assert!(cast.contains("attached-here"), "{cast}");
    assert_eq!(end["detail"]["exit_status"], 0, "{end}");

    // Port-forward, allowed for operators: bytes reach the pod's port and come back.
    let mut pf = gw
        .kubectl_cmd(&kubectl_bin(), &op, &["port-forward", "pod/web-0", ":80"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut pf);
    let seen = wait_for(&lines, "Forwarding from 127.0.0.1:", 30).unwrap_or_else(|s| {
        let _ = pf.kill();
        panic!("port-forward did not start: {s:?}")
    });
    let port: u16 = seen
        .last()
        .and_then(|l| l.split("127.0.0.1:").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap();
    let answer = {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(b"through the gateway").unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let _ = pf.kill();
    let _ = pf.wait();
    assert_eq!(answer, "THROUGH THE GATEWAY");
    let decided = gw.gw.audit_until(&["--kind", "command"], |e| {
        e.iter().any(|e| e["action"] == "kube.portforward")
    });
    assert!(
        decided
            .iter()
            .any(|e| e["action"] == "kube.portforward" && e["verdict"] == "allow"),
        "{decided:?}"
    );
}
