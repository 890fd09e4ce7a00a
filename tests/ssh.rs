//! SSH through the gateway with the real OpenSSH client (ssh, scp, sftp) against a real
//! sshd started by tests/scripts/sshd.sh: token login, exec policy, exit status relay,
//! interactive shells under a pty, file transfer, forwarding refusal, host key pinning,
//! recording and replay.

// Test code: a step that fails fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{Gateway, Scratch, current_user, free_port, ssh_keygen, sshd};

const POLICY: &str = r#"
@id("connect")
permit(principal in Group::"ops", action == Action::"connect", resource);

@id("ops-ssh")
permit(principal in Group::"ops",
       action in [Action::"ssh.exec", Action::"ssh.shell", Action::"ssh.sftp"], resource)
unless { context has command && context.command like "reboot*" };

@id("no-rm")
@reason("deleting files is not allowed through the gateway")
forbid(principal, action == Action::"ssh.exec", resource)
when { context has command && context.command like "*rm *" };

@id("tunnels")
permit(principal in Group::"tunnel", action == Action::"ssh.forward", resource);

@id("reboot-needs-approval")
@approval("1")
@approvers("ops")
permit(principal in Group::"ops", action == Action::"ssh.exec", resource)
when { context has command && context.command like "reboot*" };
"#;

struct SshGw {
    gw: Gateway,
    port: u16,
}

fn start() -> SshGw {
    start_with("")
}

/// A gateway with `extra` TOML appended to its config.
fn start_with(extra: &str) -> SshGw {
    start_with_policy(POLICY, extra)
}

/// A gateway deciding by `policy`, with `extra` TOML appended to its config.
fn start_with_policy(policy: &str, extra: &str) -> SshGw {
    let sshd = sshd();
    let port = free_port();
    let user = current_user();
    let gw = Gateway::start_config(port, policy, |_dir, admin| {
        format!(
            r#"
[gateway]
state_dir = "state"
admin_listen = "127.0.0.1:{admin}"
policy = "policy.cedar"

[[identity.issuers]]
name = "builtin"

[[listeners]]
protocol = "ssh"
listen = "127.0.0.1:{port}"

[[connections]]
name = "web"
protocol = "ssh"
target = "127.0.0.1:{sshd_port}"
user = "{user}"
private_key_file = "{key}"
known_hosts = "{known}"

[[connections]]
name = "pinned"
protocol = "ssh"
target = "127.0.0.1:{sshd_port}"
user = "{user}"
private_key_file = "{key}"
host_key_fingerprint = "{fp}"

[[connections]]
name = "impostor"
protocol = "ssh"
target = "127.0.0.1:{sshd_port}"
user = "{user}"
private_key_file = "{key}"
host_key_fingerprint = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

[audit]
jsonl = "audit.jsonl"
{extra}
"#,
            sshd_port = sshd.port,
            key = sshd.client_key().display(),
            known = sshd.known_hosts().display(),
            fp = sshd.fingerprint(),
        )
    });
    SshGw { gw, port }
}

impl SshGw {
    /// ssh options towards the gateway: token by password, no host key bookkeeping.
    fn ssh_command(&self, prog: &str, token: &str) -> Command {
        let mut cmd = Command::new("sshpass");
        cmd.args(["-p", token, prog])
            .args(["-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null"])
            .args(["-o", "LogLevel=ERROR"])
            .args(["-o", "PubkeyAuthentication=no"])
            .args([
                "-o",
                "PreferredAuthentications=password,keyboard-interactive",
            ])
            .args(["-o", "ConnectTimeout=10"])
            .stdin(Stdio::null());
        cmd
    }

    fn ssh(&self, token: &str, target: &str, command: &str) -> Output {
        self.ssh_command("ssh", token)
            .args([
                "-p",
                &self.port.to_string(),
                &format!("{target}@127.0.0.1"),
                command,
            ])
            .output()
            .expect("ssh")
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn exec_runs_on_the_target_and_relays_output_and_exit_status() {
    let s = start();
    let token = s.gw.token("alice", &["ops"]);
    let out = s.ssh(
        &token,
        "web",
        "echo hello from $(hostname -s >/dev/null && echo target); echo oops >&2",
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello from target\n");
    assert!(text(&out.stderr).contains("oops"), "{}", text(&out.stderr));

    let out = s.ssh(&token, "web", "exit 7");
    assert_eq!(out.status.code(), Some(7), "stderr: {}", text(&out.stderr));

    // A signal that kills the remote command comes back as ssh's own failure (255).
    let out = s.ssh(&token, "pinned", "kill -TERM $$");
    assert_eq!(
        out.status.code(),
        Some(255),
        "stderr: {}",
        text(&out.stderr)
    );

    // Audit has the start, the decision with its policy, and the end with the exit status.
    let events = s.gw.audit(&["--connection", "web"]);
    let exec = events
        .iter()
        .find(|e| e["kind"] == "command" && e["statement"] == "exit 7")
        .expect("command event");
    assert_eq!(exec["action"], "ssh.exec");
    assert_eq!(exec["verdict"], "allow");
    assert!(
        exec["policies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "ops-ssh")
    );
    assert_eq!(exec["identity"]["subject"], "alice");
    let end = events
        .iter()
        .find(|e| e["kind"] == "command_end" && e["session"] == exec["session"])
        .expect("command_end event");
    assert_eq!(end["detail"]["exit_status"], 7);
    assert!(events.iter().any(|e| e["kind"] == "session_start"));

    // The signal the target reported is the one relayed and recorded.
    let events = s.gw.audit(&["--connection", "pinned"]);
    let kill = events
        .iter()
        .find(|e| e["kind"] == "command" && e["statement"] == "kill -TERM $$")
        .expect("command event for the kill");
    let end = events
        .iter()
        .find(|e| e["kind"] == "command_end" && e["session"] == kill["session"])
        .expect("command_end event for the kill");
    assert_eq!(end["detail"]["exit_signal"], "TERM", "{end}");
    assert!(end["detail"].get("exit_status").is_none(), "{end}");
}

#[test]
fn denied_exec_never_reaches_the_target() {
    let s = start();
    let token = s.gw.token("alice", &["ops"]);
    let scratch = Scratch::new("ssh-deny");
    let victim = scratch.0.join("keep.txt");
    std::fs::write(&victim, "precious").unwrap();
    let out = s.ssh(&token, "web", &format!("rm -f {}", victim.display()));
    assert_eq!(
        out.status.code(),
        Some(126),
        "stderr: {}",
        text(&out.stderr)
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("deleting files is not allowed through the gateway"),
        "{err}"
    );
    assert!(victim.exists(), "the target ran a denied command");

    let events = s.gw.audit(&["--connection", "web"]);
    let denied = events
        .iter()
        .find(|e| e["kind"] == "command" && e["verdict"] == "deny")
        .expect("deny event");
    assert_eq!(denied["policies"][0], "no-rm");
    assert_eq!(denied["action"], "ssh.exec");
    // Counted in the metrics under its protocol.
    let m = Command::new("curl")
        .args([
            "-fsS",
            &format!("http://127.0.0.1:{}/metrics", s.gw.admin_port),
        ])
        .output()
        .unwrap();
    let m = text(&m.stdout);
    assert!(
        m.contains("portcullis_statements_total{protocol=\"ssh\",verdict=\"deny\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("portcullis_sessions_total{protocol=\"ssh\"} 1"),
        "{m}"
    );

    // No connect permit: logged in only to read why.
    let outsider = s.gw.token("mallory", &["guests"]);
    let out = s.ssh(&outsider, "web", "id");
    assert_eq!(
        out.status.code(),
        Some(126),
        "stderr: {}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("denied"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_tokens_and_unknown_connections_are_refused() {
    let s = start();
    // sshpass exits 5 when the password prompt comes back: the token was refused.
    let refused = |out: &Output| {
        assert!(
            matches!(out.status.code(), Some(5) | Some(255)),
            "status {:?}: {}",
            out.status.code(),
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty());
    };
    refused(&s.ssh("not-a-token", "web", "echo in"));
    let token = s.gw.token("alice", &["ops"]);
    refused(&s.ssh(&token, "nosuch", "echo in"));
    // A target user the connection does not list.
    refused(&s.ssh(&token, "nobody+web", "echo in"));
    let failed = s.gw.audit(&["--kind", "auth_failed"]);
    assert!(failed.len() >= 3, "{failed:?}");
}

#[test]
fn keyboard_interactive_access_keys_target_users_and_a_persistent_host_key() {
    let mut s = start();
    let token = s.gw.token("alice", &["ops"]);
    let port = s.port.to_string();
    let user = current_user();

    // keyboard-interactive alone (password authentication off), as SSH_ASKPASS-style
    // helpers answer it; the target user named before the connection.
    let out = Command::new("sshpass")
        .args(["-p", &token, "ssh"])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args(["-o", "LogLevel=ERROR", "-o", "PubkeyAuthentication=no"])
        .args(["-o", "PasswordAuthentication=no"])
        .args(["-o", "PreferredAuthentications=keyboard-interactive"])
        .args(["-p", &port, &format!("{user}+web@127.0.0.1"), "id -un"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "keyboard-interactive: {}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout).trim(), user);

    // The short access key from `token exchange` logs in where the token would.
    let exchanged = Command::new(support::bin())
        .args(["token", "exchange", "--gateway"])
        .arg(format!("http://127.0.0.1:{}", s.gw.admin_port))
        .args(["--ttl", "5m"])
        .env("PORTCULLIS_TOKEN", &token)
        .output()
        .unwrap();
    assert!(exchanged.status.success(), "{}", text(&exchanged.stderr));
    let key = text(&exchanged.stdout).trim().to_string();
    let out = s.ssh(&key, "web", "echo via access key");
    assert!(out.status.success(), "access key: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "via access key\n");
    let starts =
        s.gw.audit(&["--kind", "session_start", "--connection", "web"]);
    assert!(
        starts
            .iter()
            .any(|e| e["identity"]["method"] == "access_key" && e["identity"]["subject"] == "alice"),
        "{starts:?}"
    );

    // The gateway's host key survives a restart: clients' known_hosts stay valid.
    let scan = |port: &str| {
        let out = Command::new("ssh-keyscan")
            .args(["-t", "ed25519", "-p", port, "127.0.0.1"])
            .output()
            .unwrap();
        let keys: Vec<String> = text(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(keys.len(), 1, "ssh-keyscan: {}", text(&out.stderr));
        keys[0].clone()
    };
    let before = scan(&port);
    s.gw.kill9();
    s.gw.spawn();
    assert_eq!(scan(&port), before, "the host key changed across a restart");
}

#[test]
fn unknown_target_host_key_refuses_the_session() {
    let s = start();
    let token = s.gw.token("alice", &["ops"]);
    let out = s.ssh(&token, "impostor", "echo should-not-run");
    assert_eq!(
        out.status.code(),
        Some(255),
        "stderr: {}",
        text(&out.stderr)
    );
    let err = text(&out.stderr);
    assert!(err.contains("is not the pinned one"), "{err}");
    assert!(!text(&out.stdout).contains("should-not-run"));
    // The same target with its real fingerprint pinned works.
    let out = s.ssh(&token, "pinned", "echo pinned-ok");
    assert_eq!(text(&out.stdout), "pinned-ok\n", "{}", text(&out.stderr));
}

#[test]
fn env_is_filtered() {
    let s = start();
    let token = s.gw.token("alice", &["ops"]);
    let out = s
        .ssh_command("ssh", &token)
        .env("LC_TIME", "C.UTF-8")
        .env("PORTCULLIS_TEST_SECRET", "leak")
        .args(["-o", "SendEnv=LC_TIME PORTCULLIS_TEST_SECRET"])
        .args(["-p", &s.port.to_string(), "web@127.0.0.1"])
        .arg("echo lc=$LC_TIME secret=$PORTCULLIS_TEST_SECRET")
        .output()
        .unwrap();
    assert_eq!(
        text(&out.stdout),
        "lc=C.UTF-8 secret=\n",
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn local_forwarding_is_refused_without_policy() {
    let s = start();
    let token = s.gw.token("alice", &["ops"]);
    let lport = free_port();
    let mut child = s
        .ssh_command("ssh", &token)
        .args([
            "-N",
            "-L",
            &format!("127.0.0.1:{lport}:127.0.0.1:{}", sshd().port),
        ])
        .args(["-p", &s.port.to_string(), "web@127.0.0.1"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut conn = None;
    for _ in 0..100 {
        if let Ok(c) = std::net::TcpStream::connect(("127.0.0.1", lport)) {
            conn = Some(c);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut conn = conn.expect("ssh -L listener");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    let _ = conn.read_to_end(&mut buf);
    // Through a working forward sshd would greet us with its banner.
    assert!(
        !text(&buf).starts_with("SSH-"),
        "forward went through: {}",
        text(&buf)
    );
    let _ = child.kill();
    let _ = child.wait();
    let events = s.gw.audit(&["--connection", "web"]);
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "ssh.forward" && e["verdict"] == "deny")
    );
}

/// An ssh-agent on a socket in `dir` holding one fresh key with comment `comment`.
struct Agent {
    child: std::process::Child,
    sock: std::path::PathBuf,
}

impl Agent {
    fn start(dir: &Path, comment: &str) -> Agent {
        let key = ssh_keygen(&dir.join("agent_key"), comment);
        let sock = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdout(Stdio::null())
            .spawn()
            .expect("ssh-agent");
        for _ in 0..100 {
            if sock.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let added = Command::new("ssh-add")
            .arg(&key)
            .env("SSH_AUTH_SOCK", &sock)
            .output()
            .unwrap();
        assert!(added.status.success(), "ssh-add: {}", text(&added.stderr));
        Agent { child, sock }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SshGw {
    /// `ssh -A web ssh-add -l` with a fresh agent holding a key commented
    /// "portcullis-agent-test".
    fn ssh_add_list_with_agent(&self, token: &str, tag: &str) -> Output {
        let scratch = Scratch::new(tag);
        let agent = Agent::start(&scratch.0, "portcullis-agent-test");
        self.ssh_command("ssh", token)
            .env("SSH_AUTH_SOCK", &agent.sock)
            .args([
                "-A",
                "-p",
                &self.port.to_string(),
                "web@127.0.0.1",
                "ssh-add -l",
            ])
            .output()
            .unwrap()
    }

    /// Audit has an `ssh.forward` decision with `verdict` for each kind of forward named.
    fn assert_forwards_audited(&self, verdict: &str, kinds: &[&str]) {
        let events = self.gw.audit(&["--connection", "web"]);
        for what in kinds {
            assert!(
                events.iter().any(|e| e["action"] == "ssh.forward"
                    && e["verdict"] == verdict
                    && e["statement"].as_str().is_some_and(|t| t.starts_with(what))),
                "no {what} with verdict {verdict} in audit"
            );
        }
    }
}

/// A listener here that greets the first connection with `line`.
fn greeter(line: &'static str) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut c, _)) = l.accept() {
            let _ = c.write_all(line.as_bytes());
        }
    });
    port
}

#[test]
fn forwards_and_agent_work_when_policy_allows_them() {
    let s = start();
    let token = s.gw.token("alice", &["ops", "tunnel"]);
    let port = s.port.to_string();

    // ssh -L: a local port reaches the target's side (here the sshd itself).
    let lport = free_port();
    let mut tunnel = s
        .ssh_command("ssh", &token)
        .args(["-N", "-o", "ExitOnForwardFailure=yes", "-L"])
        .arg(format!("127.0.0.1:{lport}:127.0.0.1:{}", sshd().port))
        .args(["-p", &port, "web@127.0.0.1"])
        .spawn()
        .unwrap();
    let mut banner = String::new();
    for _ in 0..100 {
        if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", lport)) {
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = [0u8; 64];
            let n = c.read(&mut buf).unwrap_or(0);
            banner = text(&buf[..n]);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = tunnel.kill();
    let _ = tunnel.wait();
    assert!(banner.starts_with("SSH-2.0-"), "through -L: {banner:?}");

    // ssh -R: the target listens; a connection made there reaches a listener here.
    let here = greeter("greetings through the remote forward\n");
    let rport = free_port();
    let out = s
        .ssh_command("ssh", &token)
        .args(["-o", "ExitOnForwardFailure=yes", "-R"])
        .arg(format!("127.0.0.1:{rport}:127.0.0.1:{here}"))
        .args(["-p", &port, "web@127.0.0.1"])
        .arg(format!(
            "bash -c 'exec 3<>/dev/tcp/127.0.0.1/{rport} && head -1 <&3'"
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "ssh -R: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "greetings through the remote forward\n");

    // ssh -A: the target's ssh-add sees the client's agent.
    let out = s.ssh_add_list_with_agent(&token, "ssh-agent");
    assert!(out.status.success(), "ssh -A: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("portcullis-agent-test"),
        "agent keys seen on the target: {}",
        text(&out.stdout)
    );

    s.assert_forwards_audited("allow", &["direct-tcpip", "tcpip-forward", "agent"]);
}

#[test]
fn remote_forward_and_agent_are_refused_without_policy() {
    let s = start();
    let token = s.gw.token("alice", &["ops"]);
    let port = s.port.to_string();
    let rport = free_port();
    let out = s
        .ssh_command("ssh", &token)
        .args(["-o", "ExitOnForwardFailure=yes", "-R"])
        .arg(format!("127.0.0.1:{rport}:127.0.0.1:9"))
        .args(["-p", &port, "web@127.0.0.1", "sleep 5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255), "ssh -R went through");
    // Nothing listens on the target's side.
    assert!(std::net::TcpStream::connect(("127.0.0.1", rport)).is_err());

    let out = s.ssh_add_list_with_agent(&token, "ssh-agent-refused");
    assert!(
        !text(&out.stdout).contains("portcullis-agent-test"),
        "the agent reached the target"
    );
    assert_ne!(out.status.code(), Some(0));

    s.assert_forwards_audited("deny", &["tcpip-forward", "agent"]);
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn scp_and_sftp_move_files_intact() {
    let s = start();
    let token = s.gw.token("alice", &["ops"]);
    let scratch = Scratch::new("ssh-scp");
    let src = scratch.0.join("big.bin");
    let status = Command::new("bash")
        .arg("-c")
        .arg(format!("head -c 52428800 /dev/urandom > {}", src.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let remote = scratch.0.join("remote.bin");
    let back = scratch.0.join("back.bin");
    let port = s.port.to_string();
    let up = s
        .ssh_command("scp", &token)
        .args(["-P", &port])
        .arg(&src)
        .arg(format!("web@127.0.0.1:{}", remote.display()))
        .output()
        .unwrap();
    assert!(up.status.success(), "scp up: {}", text(&up.stderr));
    let down = s
        .ssh_command("scp", &token)
        .args(["-P", &port])
        .arg(format!("web@127.0.0.1:{}", remote.display()))
        .arg(&back)
        .output()
        .unwrap();
    assert!(down.status.success(), "scp down: {}", text(&down.stderr));
    let want = sha256(&src);
    assert_eq!(sha256(&remote), want);
    assert_eq!(sha256(&back), want);

    // sftp in batch mode: put, list, get.
    let batch = scratch.0.join("batch");
    let again = scratch.0.join("again.bin");
    std::fs::write(
        &batch,
        format!(
            "put {} {}/via-sftp.bin\nls {}\nget {}/via-sftp.bin {}\n",
            src.display(),
            scratch.0.display(),
            scratch.0.display(),
            scratch.0.display(),
            again.display()
        ),
    )
    .unwrap();
    // Commands on stdin (`-b` would imply BatchMode, which forbids password logins).
    let out = s
        .ssh_command("sftp", &token)
        .args(["-P", &port])
        .arg("web@127.0.0.1")
        .stdin(std::fs::File::open(&batch).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "sftp: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("via-sftp.bin"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(sha256(&again), want);
    let events = s.gw.audit(&["--connection", "web"]);
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "ssh.sftp" && e["verdict"] == "allow")
    );
}

#[test]
fn interactive_shell_is_recorded_and_replays() {
    let s = start();
    let token = s.gw.token("alice", &["ops"]);
    // `script` gives ssh a real terminal; ssh asks the gateway for a pty and a shell.
    let ssh = format!(
        "sshpass -p {token} ssh -tt -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
         -o LogLevel=ERROR -o PubkeyAuthentication=no -p {} web@127.0.0.1",
        s.port
    );
    let mut child = Command::new("script")
        .args(["-qfec", &ssh, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    stdin
        .write_all(b"stty cols 100 rows 30; echo MARK$((6*7))END; tput cols\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    stdin.write_all(b"exit 3\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let shown = text(&out.stdout);
    assert!(shown.contains("MARK42END"), "terminal showed: {shown}");

    let events = s.gw.audit(&["--connection", "web"]);
    let shell = events
        .iter()
        .find(|e| e["kind"] == "command" && e["action"] == "ssh.shell")
        .expect("shell decision");
    let session = shell["session"].as_str().unwrap().to_string();
    let end = events
        .iter()
        .find(|e| e["kind"] == "command_end" && e["session"] == session.as_str())
        .expect("shell end");
    assert_eq!(end["detail"]["exit_status"], 3);
    let rec = end["detail"]["recording"].as_str().expect("recording link");
    let cast = std::fs::read_to_string(s.gw.scratch.0.join("state").join(rec)).unwrap();
    assert!(cast.lines().next().unwrap().contains("\"version\":2"));
    assert!(cast.contains("\"m\""), "no policy marker");
    assert!(cast.contains("\"i\""), "no input events");

    let replay = s.gw.cli(&["replay", &session, "--no-wait"]);
    assert!(replay.ok, "{}", replay.stderr);
    assert!(replay.stdout.contains("MARK42END"), "{}", replay.stdout);
    // Timed replay at high speed still plays the same bytes.
    let timed = s.gw.cli(&["replay", &session, "--speed", "50"]);
    assert!(timed.ok, "{}", timed.stderr);
    assert!(timed.stdout.contains("MARK42END"));
}

#[test]
fn mapped_public_key_logs_in_as_its_identity() {
    let keys = Scratch::new("ssh-keys");
    let carol = ssh_keygen(&keys.0.join("carol"), "carol");
    let stranger = ssh_keygen(&keys.0.join("stranger"), "stranger");
    let public = std::fs::read_to_string(carol.with_extension("pub")).unwrap();
    let s = start_with(&format!(
        "[[identity.ssh_keys]]\nkey = \"{}\"\nsubject = \"carol\"\ngroups = [\"ops\"]\n",
        public.trim()
    ));
    let with_key = |key: &Path| {
        Command::new("ssh")
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args([
                "-o",
                "LogLevel=ERROR",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
            ])
            .args(["-o", "PreferredAuthentications=publickey", "-i"])
            .arg(key)
            .args(["-p", &s.port.to_string(), "web@127.0.0.1", "echo keyed"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = with_key(&carol);
    assert_eq!(text(&out.stdout), "keyed\n", "{}", text(&out.stderr));
    let out = with_key(&stranger);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );
    let events = s.gw.audit(&["--connection", "web"]);
    let start = events
        .iter()
        .find(|e| e["kind"] == "session_start")
        .expect("session start");
    assert_eq!(start["identity"]["principal"], "ssh-key/carol");
    assert_eq!(start["identity"]["method"], "ssh_key");
}

/// The one pending approval request's id, as `token` lists them.
fn pending_id(gw: &Gateway, token: &str) -> String {
    for _ in 0..200 {
        let r = gw.cli(&[
            "approvals",
            "--token",
            token,
            "list",
            "--state",
            "pending",
            "--json",
        ]);
        assert!(r.ok, "{}", r.stderr);
        let reqs: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap();
        if let Some(id) = reqs.first().and_then(|r| r["id"].as_str()) {
            return id.to_string();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no request became pending");
}

#[test]
fn reviewed_exec_is_held_until_approved_or_denied() {
    let s = start();
    let alice = s.gw.token("alice", &["ops"]);
    let bob = s.gw.token("bob", &["ops"]);
    let scratch = Scratch::new("ssh-hold");
    let flag = scratch.0.join("rebooted");
    let command = format!(
        "reboot() {{ touch {}; echo rebooted; }}; reboot",
        flag.display()
    );
    let spawn = || {
        s.ssh_command("ssh", &alice)
            .args(["-p", &s.port.to_string(), "web@127.0.0.1", &command])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };

    let held = spawn();
    let id = pending_id(&s.gw, &bob);
    assert!(!flag.exists(), "the target ran a held command");
    let r = s.gw.cli(&["approvals", "--token", &bob, "approve", &id]);
    assert!(r.ok, "{}", r.stderr);
    let out = held.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "rebooted\n");
    assert!(
        text(&out.stderr).contains(&format!("held for approval {id}")),
        "{}",
        text(&out.stderr)
    );
    assert!(flag.exists());
    std::fs::remove_file(&flag).unwrap();

    let held = spawn();
    let id = pending_id(&s.gw, &bob);
    let r = s.gw.cli(&[
        "approvals",
        "--token",
        &bob,
        "deny",
        &id,
        "--reason",
        "not today",
    ]);
    assert!(r.ok, "{}", r.stderr);
    let out = held.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(126),
        "stderr: {}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("not today"),
        "{}",
        text(&out.stderr)
    );
    assert!(!flag.exists(), "the target ran a denied command");

    // One `command` event per held command, written when its wait ended: the denied one
    // carries its approval id.
    let events = s.gw.audit(&["--connection", "web", "--kind", "command"]);
    let denied: Vec<_> = events
        .iter()
        .filter(|e| e["approval"] == id.as_str())
        .collect();
    assert_eq!(denied.len(), 1, "{events:?}");
    assert_eq!(denied[0]["verdict"], "deny");
    let mut numbers: Vec<(String, u64)> = events
        .iter()
        .map(|e| {
            (
                e["session"].as_str().unwrap().to_string(),
                e["command"].as_u64().unwrap(),
            )
        })
        .collect();
    let all = numbers.len();
    numbers.sort();
    numbers.dedup();
    assert_eq!(
        numbers.len(),
        all,
        "a command number recorded twice: {events:?}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e["verdict"] == "allow" && e["approval"].is_string())
            .count(),
        1,
        "{events:?}"
    );
}

/// An interactive shell is one long channel request: revoking the access key it logged in
/// with ends the whole session within a second, and the session's end says why.
#[test]
fn revoking_an_access_key_ends_a_live_interactive_shell() {
    let s = start();
    let token = s.gw.token("alice", &["ops"]);
    let exchanged = Command::new(support::bin())
        .args(["token", "exchange", "--gateway"])
        .arg(format!("http://127.0.0.1:{}", s.gw.admin_port))
        .env("PORTCULLIS_TOKEN", &token)
        .output()
        .unwrap();
    assert!(exchanged.status.success(), "{}", text(&exchanged.stderr));
    let key = text(&exchanged.stdout).trim().to_string();
    let id = format!("ak_{}", key.split('_').nth(1).unwrap());
    let ssh = format!(
        "sshpass -p {key} ssh -tt -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
         -o LogLevel=ERROR -o PubkeyAuthentication=no -p {} web@127.0.0.1",
        s.port
    );
    let mut child = Command::new("script")
        .args(["-qfec", &ssh, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    stdin.write_all(b"echo BEFORE$((6*7))\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));

    let r = s.gw.cli(&["token", "revoke", &id]);
    assert!(r.ok, "{}", r.stderr);
    let revoked = Instant::now();
    // The shell is still open on the client's side: nothing typed ends it.
    let deadline = revoked + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the shell outlived its access key"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = revoked.elapsed();
    assert!(!status.success());
    assert!(took < Duration::from_millis(1500), "ended after {took:?}");
    let mut shown = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut shown)
        .unwrap();
    assert!(shown.contains("BEFORE42"), "{shown}");

    let deadline = Instant::now() + Duration::from_secs(5);
    let end = loop {
        let ends =
            s.gw.audit(&["--kind", "session_end", "--connection", "web"]);
        if let Some(e) = ends.into_iter().next() {
            break e;
        }
        assert!(Instant::now() < deadline, "no session end recorded");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        end["error"].as_str().is_some_and(|e| e.contains("revoked")),
        "{end}"
    );
}

/// The shipped example policy is an allow-list of programs over parsed command lines: the
/// spellings that walked around the old string rules are refused, and never reach the host.
#[test]
fn the_shipped_allow_list_holds_against_the_usual_ways_around_it() {
    let policy = std::fs::read_to_string(support::root().join("examples/ssh.cedar")).unwrap();
    let s = start_with_policy(&policy, "");
    let token = s.gw.token("alice", &["ops"]);
    let scratch = Scratch::new("ssh-allow-list");
    let dir = scratch.0.display().to_string();
    let victim = scratch.0.join("keep.txt");
    std::fs::write(&victim, "precious").unwrap();
    let v = victim.display().to_string();

    let ls = s.ssh(
        &token,
        "web",
        &format!("ls {dir} && /bin/ls -a {dir} 2>/dev/null"),
    );
    assert!(ls.status.success(), "{}", text(&ls.stderr));
    assert_eq!(
        text(&ls.stdout).matches("keep.txt").count(),
        2,
        "{}",
        text(&ls.stdout)
    );

    for attempt in [
        format!("rm -fr {v}"),
        format!("rm -r -f {v}"),
        format!(" rm {v}"),
        format!("/bin/rm {v}"),
        format!("\\rm {v}"),
        format!("r''m {v}"),
        format!("find {dir} -name keep.txt -delete"),
        format!("ls && rm {v}"),
        format!("ls; rm {v}"),
        format!("ls $(rm {v})"),
        format!("ls `rm {v}`"),
        format!("sh -c 'rm {v}'"),
        format!("/usr/bin/env rm {v}"),
        format!("eval rm {v}"),
        format!("R=rm; $R {v}"),
        format!("echo gone > {v}"),
    ] {
        let out = s.ssh(&token, "web", &attempt);
        assert_eq!(
            out.status.code(),
            Some(126),
            "{attempt:?} was not refused: {}",
            text(&out.stderr)
        );
        assert_eq!(
            std::fs::read_to_string(&victim).ok().as_deref(),
            Some("precious"),
            "{attempt:?} reached the host"
        );
    }
    let out = s.ssh(&token, "web", &format!("ls && rm {v}"));
    assert!(
        text(&out.stderr).contains("it runs rm"),
        "{}",
        text(&out.stderr)
    );
    let out = s.ssh(&token, "web", &format!("ls $(rm {v})"));
    assert!(
        text(&out.stderr).contains("command substitution"),
        "{}",
        text(&out.stderr)
    );

    // The audit event says what the line would have run.
    let events = s.gw.audit(&["--kind", "command", "--connection", "web"]);
    let chained = events
        .iter()
        .find(|e| e["statement"] == format!("ls && rm {v}").as_str())
        .expect("event of the chained line");
    assert_eq!(chained["verdict"], "deny");
    assert_eq!(
        chained["detail"]["programs"],
        serde_json::json!(["ls", "rm"])
    );
    let hidden = events
        .iter()
        .find(|e| e["statement"] == format!("ls $(rm {v})").as_str())
        .expect("event of the substituted line");
    assert_eq!(
        hidden["detail"]["opaque"],
        serde_json::json!(["command substitution"])
    );
}
