//! SSH controls through the real OpenSSH client against a real sshd: forwarding and agent
//! decided by policy, exec held for approval, revocation ending live shells, and the shipped
//! allow-list against the usual ways around a string rule.

// Test code: a step that fails fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::ssh::{SshGw, start, start_with_policy, text};
use support::{Gateway, Scratch, free_port, ssh_keygen, sshd};

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

    // ssh -L: a local port reaches the target's side (here the sshd itself). The local port
    // is picked free, but a test running beside this one may take it first: then ssh exits
    // (ExitOnForwardFailure) and another port is tried.
    let mut banner = String::new();
    'attempt: for _ in 0..3 {
        let lport = free_port();
        let mut tunnel = s
            .ssh_command("ssh", &token)
            .args(["-N", "-o", "ExitOnForwardFailure=yes", "-L"])
            .arg(format!("127.0.0.1:{lport}:127.0.0.1:{}", sshd().port))
            .args(["-p", &port, "web@127.0.0.1"])
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if tunnel.try_wait().unwrap().is_some() {
                continue 'attempt;
            }
            if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", lport)) {
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut buf = [0u8; 64];
                let n = c.read(&mut buf).unwrap_or(0);
                banner = text(&buf[..n]);
                // Whatever answered, it was not this tunnel if ssh gave up on the port.
                std::thread::sleep(Duration::from_millis(300));
                if !banner.starts_with("SSH-2.0-") && tunnel.try_wait().unwrap().is_some() {
                    continue 'attempt;
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = tunnel.kill();
        let _ = tunnel.wait();
        break;
    }
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
