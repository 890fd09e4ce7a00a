//! Just-in-time approvals end to end: real PostgreSQL, real psql sessions held by the gateway,
//! reviewers voting through the `portcullis approvals` command line (the admin API), a
//! webhook receiver started by the test.

// Test code: a step that fails fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{Gateway, GatewaySpec, Run, pg};

const POLICY: &str = r#"
@id("connect")
permit(principal in Group::"ci", action == Action::"connect", resource);
@id("read")
permit(principal in Group::"ci", action in [Action::"sql.read", Action::"sql.session"], resource);
@id("writes-need-a-dba")
@reason("writes need a DBA's approval")
@approval("1")
@approvers("dba")
permit(principal in Group::"ci", action == Action::"sql.write", resource)
unless { context.tables.contains("appr_two") };
@id("two-dbas")
@approval("2")
@approvers("dba")
permit(principal in Group::"ci", action == Action::"sql.write", resource)
when { context.tables.contains("appr_two") };
"#;

/// A table of its own for one test, readable and writable by the connection's role.
fn table(name: &str) {
    pg().admin_sql(&format!(
        "DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (id int PRIMARY KEY, note text); \
         INSERT INTO {name} SELECT g, 'row ' || g FROM generate_series(1, 5) g; \
         GRANT ALL ON {name} TO app;"
    ));
}

fn rows(name: &str) -> String {
    pg().admin_sql(&format!("SELECT count(*) FROM {name}"))
}

fn start(extra: &str) -> Gateway {
    Gateway::start(GatewaySpec {
        policy: POLICY,
        extra,
        ..GatewaySpec::default()
    })
}

/// `portcullis approvals …` as the holder of `token`.
fn approvals(gw: &Gateway, token: &str, args: &[&str]) -> Run {
    let mut all = vec!["approvals", "--token", token];
    all.extend_from_slice(args);
    gw.cli(&all)
}

/// Requests in `state`, as JSON.
fn listed(gw: &Gateway, token: &str, state: &str) -> Vec<serde_json::Value> {
    let r = approvals(gw, token, &["list", "--state", state, "--json"]);
    assert!(r.ok, "list failed: {}", r.stderr);
    serde_json::from_str::<Vec<serde_json::Value>>(&r.stdout).expect("json list")
}

/// Wait for exactly one pending request and return its id.
fn pending_id(gw: &Gateway, token: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reqs = listed(gw, token, "pending");
        if let Some(r) = reqs.first() {
            assert_eq!(reqs.len(), 1, "{reqs:?}");
            return r["id"].as_str().expect("id").to_string();
        }
        assert!(Instant::now() < deadline, "no request became pending");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// psql running `sql` (a script on stdin, so it goes on after an error) in the background.
fn held_psql(gw: &Gateway, token: &str, sql: &str) -> Child {
    let mut child = gw
        .psql_command(token, "orders")
        .stdin(Stdio::piped())
        .spawn()
        .expect("psql");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(sql.as_bytes())
        .expect("script");
    child
}

/// Wait for psql to end (bounded) and return (success, stdout, stderr).
fn finish(mut child: Child) -> (bool, String, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let (mut out, mut err) = (String::new(), String::new());
            child.stdout.take().map(|mut s| s.read_to_string(&mut out));
            child.stderr.take().map(|mut s| s.read_to_string(&mut err));
            return (status.success(), out, err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("psql did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn held_delete_runs_once_a_dba_approves_and_the_chain_is_linked() {
    table("appr_ok");
    let gw = start("");
    let ci = gw.token("pipeline-7", &["ci"]);
    let dba = gw.token("alice", &["dba"]);
    let child = held_psql(
        &gw,
        &ci,
        "DELETE FROM appr_ok WHERE id = 1;\nSELECT 'after';\n",
    );
    let id = pending_id(&gw, &dba);
    assert_eq!(rows("appr_ok"), "5", "the held delete must not have run");
    let shown = approvals(&gw, &dba, &["show", &id]);
    assert!(
        shown.stdout.contains("DELETE FROM appr_ok WHERE id = 1"),
        "{}",
        shown.stdout
    );

    // The requester cannot approve its own command, even holding the approver group.
    let self_token = gw.token("pipeline-7", &["ci", "dba"]);
    let r = approvals(&gw, &self_token, &["approve", &id]);
    assert!(
        !r.ok && r.stderr.contains("requested by you"),
        "{}",
        r.stderr
    );
    // Nor can someone outside the approver group.
    let outsider = gw.token("bob", &["ci"]);
    let r = approvals(&gw, &outsider, &["approve", &id]);
    assert!(!r.ok && r.stderr.contains("dba"), "{}", r.stderr);

    let r = approvals(&gw, &dba, &["approve", &id, "--reason", "ticket 42"]);
    assert!(r.ok, "{}", r.stderr);
    let (ok, out, err) = finish(child);
    assert!(ok, "{err}");
    assert!(err.contains(&format!("held for approval {id}")), "{err}");
    assert!(out.contains("after"), "{out}");
    assert_eq!(rows("appr_ok"), "4");

    // Request, vote, outcome and the command's execution share the approval id.
    let chain = gw.audit(&["--approval", &id]);
    let kinds: Vec<&str> = chain.iter().filter_map(|e| e["kind"].as_str()).collect();
    for k in [
        "approval_request",
        "approval_vote",
        "approval_outcome",
        "command",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    let cmd = chain.iter().find(|e| e["kind"] == "command").unwrap();
    assert_eq!(cmd["verdict"], "allow");
    assert_eq!(cmd["statement"], "DELETE FROM appr_ok WHERE id = 1;");
}

#[test]
fn denied_statement_gets_a_clear_error_and_the_session_goes_on() {
    table("appr_deny");
    let gw = start("");
    let ci = gw.token("pipeline-8", &["ci"]);
    let dba = gw.token("alice", &["dba"]);
    let child = held_psql(
        &gw,
        &ci,
        "DELETE FROM appr_deny WHERE id = 2;\nSELECT 'still here';\n",
    );
    let id = pending_id(&gw, &dba);
    let r = approvals(
        &gw,
        &dba,
        &["deny", &id, "--reason", "not during the freeze"],
    );
    assert!(r.ok, "{}", r.stderr);
    let (_, out, err) = finish(child);
    assert!(err.contains("was denied by"), "{err}");
    assert!(err.contains("not during the freeze"), "{err}");
    assert!(out.contains("still here"), "session must go on: {out}");
    assert_eq!(rows("appr_deny"), "5");
    let cmd = gw.audit(&["--approval", &id, "--kind", "command"]);
    assert_eq!(cmd[0]["verdict"], "deny");
}

#[test]
fn two_approvers_are_needed_where_the_rule_says_so() {
    table("appr_two");
    let gw = start("");
    let ci = gw.token("pipeline-9", &["ci"]);
    let alice = gw.token("alice", &["dba"]);
    let alice_again = gw.token("alice", &["dba", "other"]);
    let carol = gw.token("carol", &["dba"]);
    let child = held_psql(&gw, &ci, "UPDATE appr_two SET note = 'x' WHERE id = 3;\n");
    let id = pending_id(&gw, &alice);
    assert!(approvals(&gw, &alice, &["approve", &id]).ok);
    // Still held: one of two.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(listed(&gw, &alice, "pending").len(), 1);
    // The same person again does not count twice.
    let r = approvals(&gw, &alice_again, &["approve", &id]);
    assert!(!r.ok, "{}", r.stdout);
    assert!(approvals(&gw, &carol, &["approve", &id]).ok);
    let (ok, _, err) = finish(child);
    assert!(ok, "{err}");
    assert_eq!(
        pg().admin_sql("SELECT note FROM appr_two WHERE id = 3"),
        "x"
    );
}

#[test]
fn a_request_expires_and_a_cancel_withdraws_it() {
    table("appr_exp");
    let gw = start("[approvals]\npending_ttl = \"2s\"\n");
    let ci = gw.token("pipeline-10", &["ci"]);
    let dba = gw.token("alice", &["dba"]);
    let child = held_psql(
        &gw,
        &ci,
        "DELETE FROM appr_exp WHERE id = 1;\nSELECT 'after expiry';\n",
    );
    let (_, out, err) = finish(child);
    assert!(err.contains("expired"), "{err}");
    assert!(out.contains("after expiry"), "{out}");
    assert_eq!(rows("appr_exp"), "5");
    assert_eq!(listed(&gw, &dba, "expired").len(), 1);

    // psql's cancel (SIGINT sends a CancelRequest) withdraws the held statement.
    let child = held_psql(&gw, &ci, "DELETE FROM appr_exp WHERE id = 2;\n");
    let id = pending_id(&gw, &dba);
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let (_, _, err) = finish(child);
    assert!(err.contains("canceling statement"), "{err}");
    let shown = approvals(&gw, &dba, &["show", &id, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&shown.stdout).expect("json");
    assert_eq!(v["state"], "cancelled", "{v}");
    assert_eq!(rows("appr_exp"), "5");
}

#[test]
fn a_statement_held_across_a_restart_fails_cleanly_and_stays_visible() {
    table("appr_restart");
    let mut gw = start("");
    let ci = gw.token("pipeline-11", &["ci"]);
    let dba = gw.token("alice", &["dba"]);
    let child = held_psql(&gw, &ci, "DELETE FROM appr_restart WHERE id = 1;\n");
    let id = pending_id(&gw, &dba);
    gw.kill9();
    let (ok, _, err) = finish(child);
    assert!(!ok, "the held statement must fail: {err}");
    gw.spawn();
    let shown = approvals(&gw, &dba, &["show", &id, "--json"]);
    assert!(shown.ok, "{}", shown.stderr);
    let v: serde_json::Value = serde_json::from_str(&shown.stdout).expect("json");
    assert_eq!(v["state"], "abandoned", "{v}");
    // It can never be approved into running.
    assert!(!approvals(&gw, &dba, &["approve", &id]).ok);
    assert_eq!(rows("appr_restart"), "5");
}

#[test]
fn a_granted_window_lets_writes_pass_until_it_ends() {
    table("appr_win");
    let gw = start("[approvals]\napprovers = [\"dba\"]\n");
    let ci = gw.token("pipeline-12", &["ci"]);
    let dba = gw.token("alice", &["dba"]);
    let r = approvals(
        &gw,
        &ci,
        &[
            "request",
            "--connection",
            "orders",
            "--action",
            "sql.write",
            "--for",
            "4s",
            "--reason",
            "data fix INC-7",
            "--json",
        ],
    );
    assert!(r.ok, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    let id = v["id"].as_str().unwrap().to_string();
    assert!(approvals(&gw, &dba, &["approve", &id]).ok);
    let started = Instant::now();
    let r = gw.psql(&ci, "DELETE FROM appr_win WHERE id = 1");
    assert!(r.ok, "{}", r.stderr);
    assert!(!r.stderr.contains("held for approval"), "{}", r.stderr);
    let r = gw.psql(&ci, "DELETE FROM appr_win WHERE id = 2");
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(rows("appr_win"), "3");
    let cmds = gw.audit(&["--approval", &id, "--kind", "command"]);
    assert_eq!(cmds.len(), 2, "{cmds:?}");
    // After the window, the next write is held again.
    let left = Duration::from_secs(5).saturating_sub(started.elapsed());
    std::thread::sleep(left);
    let child = held_psql(&gw, &ci, "DELETE FROM appr_win WHERE id = 3;\n");
    let held = pending_id(&gw, &dba);
    assert_ne!(held, id);
    assert!(approvals(&gw, &ci, &["cancel", &held]).ok);
    let (_, _, err) = finish(child);
    assert!(err.contains("cancelled"), "{err}");
    assert_eq!(rows("appr_win"), "3");
}

/// A one-connection-at-a-time HTTP receiver that keeps every request body.
fn receiver() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut data = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read the head, then as much body as Content-Length says.
            let body = loop {
                let Ok(n) = s.read(&mut chunk) else {
                    break None;
                };
                if n == 0 {
                    break None;
                }
                data.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&data).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if data.len() >= end + 4 + len {
                        break Some(text[end + 4..end + 4 + len].to_string());
                    }
                }
            };
            // `/reject` answers 400, which the gateway counts as a failed delivery.
            let rejected = data.starts_with(b"POST /reject ");
            let reply: &[u8] = if rejected {
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\nconnection: close\r\n\r\nno"
            } else {
                if let Some(b) = body {
                    kept.lock().unwrap().push(b);
                }
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
            };
            let _ = s.write_all(reply);
        }
    });
    (port, bodies)
}

#[test]
fn webhooks_announce_requests_and_outcomes() {
    table("appr_hook");
    let (port, bodies) = receiver();
    let gw = start(&format!(
        "[approvals]\n[[approvals.webhooks]]\nurl = \"http://127.0.0.1:{port}/slack\"\nformat = \"slack\"\n\
         [[approvals.webhooks]]\nurl = \"http://127.0.0.1:{port}/reject\"\n"
    ));
    let ci = gw.token("pipeline-13", &["ci"]);
    let dba = gw.token("alice", &["dba"]);
    let child = held_psql(&gw, &ci, "DELETE FROM appr_hook WHERE id = 1;\n");
    let id = pending_id(&gw, &dba);
    assert!(approvals(&gw, &dba, &["approve", &id]).ok);
    assert!(finish(child).0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while bodies.lock().unwrap().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = bodies.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:?}");
    for b in &got {
        let v: serde_json::Value = serde_json::from_str(b).expect("well-formed JSON");
        let text = v["text"].as_str().expect("slack text");
        assert!(text.contains(&id), "{text}");
    }
    assert!(
        got[0].contains("portcullis approvals approve"),
        "{}",
        got[0]
    );
    assert!(got[1].contains("approved"), "{}", got[1]);
    // Deliveries and the refused hook's failures are visible in metrics; the proxy went on.
    let metrics = || {
        let out = Command::new("curl")
            .args([
                "-fsS",
                &format!("http://127.0.0.1:{}/metrics", gw.admin_port),
            ])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut m = metrics();
    while !m.contains("portcullis_webhook_notices_total{outcome=\"failed\"} 2")
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
        m = metrics();
    }
    assert!(
        m.contains("portcullis_webhook_notices_total{outcome=\"delivered\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("portcullis_webhook_notices_total{outcome=\"failed\"} 2"),
        "{m}"
    );
}

#[test]
fn held_in_extended_protocol_and_inside_a_transaction() {
    table("appr_ext");
    let gw = start("");
    let ci = gw.token("pipeline-14", &["ci"]);
    let dba = gw.token("alice", &["dba"]);
    // pgbench -M prepared: Parse at prepare, the Execute with its parameter is held.
    let dir = support::Scratch::new("appr-ext");
    let script = dir.0.join("delete.sql");
    std::fs::write(
        &script,
        "\\set id 4\nDELETE FROM appr_ext WHERE id = :id;\n",
    )
    .unwrap();
    let bench = Command::new("pgbench")
        .args(["-n", "-t", "1", "-M", "prepared", "-h", "127.0.0.1", "-p"])
        .arg(gw.pg_port.to_string())
        .args(["-U", "ci", "-f"])
        .arg(&script)
        .arg("orders")
        .env("PGPASSWORD", &ci)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pgbench");
    let id = pending_id(&gw, &dba);
    let shown = approvals(&gw, &dba, &["show", &id, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&shown.stdout).expect("json");
    assert_eq!(v["kind"]["type"], "one_time");
    // Approvers see the value bound to $1 and what the statement touches, not only `$1`.
    assert_eq!(
        v["kind"]["statement"],
        "DELETE FROM appr_ext WHERE id = $1;"
    );
    assert_eq!(v["kind"]["parameters"], serde_json::json!(["4"]), "{v}");
    assert_eq!(v["kind"]["tables"], serde_json::json!(["appr_ext"]), "{v}");
    // Only the requester and those who may approve see it.
    let mallory = gw.token("mallory", &["reader"]);
    assert!(listed(&gw, &mallory, "pending").is_empty());
    let hidden = approvals(&gw, &mallory, &["show", &id]);
    assert!(
        !hidden.ok && hidden.stderr.contains("does not exist"),
        "{}",
        hidden.stderr
    );
    assert_eq!(
        listed(&gw, &ci, "pending").len(),
        1,
        "the requester sees its own"
    );
    let plain = approvals(&gw, &dba, &["show", &id]);
    assert!(plain.stdout.contains("[$1 = '4']"), "{}", plain.stdout);
    assert!(
        plain.stdout.contains("tables: appr_ext"),
        "{}",
        plain.stdout
    );
    assert!(approvals(&gw, &dba, &["approve", &id]).ok);
    let (ok, out, err) = finish(bench);
    assert!(ok, "{out}{err}");
    assert_eq!(rows("appr_ext"), "4");

    // Inside a transaction: the held statement runs in it once approved, and the commit
    // after it keeps it.
    let child = held_psql(
        &gw,
        &ci,
        "BEGIN;\nDELETE FROM appr_ext WHERE id = 5;\nCOMMIT;\nSELECT 'committed';\n",
    );
    let id = pending_id(&gw, &dba);
    assert!(approvals(&gw, &dba, &["approve", &id]).ok);
    let (ok, out, err) = finish(child);
    assert!(ok && out.contains("committed"), "{out}{err}");
    assert_eq!(rows("appr_ext"), "3");
}

/// A rule that asks for approval without saying who approves would let any token holder
/// approve: `config check` reports it and the gateway does not start with it.
#[test]
fn an_approval_rule_without_approvers_is_a_configuration_error() {
    let dir = support::Scratch::new("noapprovers");
    std::fs::write(
        dir.0.join("p.cedar"),
        "@id(\"held-writes\")\n@approval(\"1\")\npermit(principal, action == Action::\"sql.write\", resource);\n",
    )
    .unwrap();
    let cfg = dir.0.join("gw.toml");
    std::fs::write(&cfg, "[gateway]\nstate_dir='s'\npolicy='p.cedar'\n").unwrap();
    let check = gw_cli(&["config", "check", "--config"], &cfg);
    assert!(!check.status.success());
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(
        err.contains("policy `held-writes`: @approval without @approvers"),
        "{err}"
    );
    let serve = gw_cli(&["serve", "--config"], &cfg);
    assert!(!serve.status.success());
    assert!(
        String::from_utf8_lossy(&serve.stderr).contains("@approval without @approvers"),
        "{}",
        String::from_utf8_lossy(&serve.stderr)
    );
    // A default in the configuration says who approves.
    std::fs::write(
        &cfg,
        "[gateway]\nstate_dir='s'\npolicy='p.cedar'\n[approvals]\napprovers=['dba']\n",
    )
    .unwrap();
    let check = gw_cli(&["config", "check", "--config"], &cfg);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

fn gw_cli(args: &[&str], cfg: &std::path::Path) -> std::process::Output {
    std::process::Command::new(support::bin())
        .args(args)
        .arg(cfg)
        .output()
        .expect("portcullis")
}
