//! SSH through the gateway with the real OpenSSH client (ssh, scp, sftp) against a real
//! sshd started by tests/scripts/sshd.sh: token login, exec policy, exit status relay,
//! interactive shells under a pty, file transfer, host key pinning, recording and replay.

// Test code: a step that fails fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::ssh::{start, start_with, text};
use support::{Scratch, current_user, ssh_keygen};

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
