//! End to end, the wire and the edges: TLS, target authentication methods, startup
//! parameter filtering, oversized frames, policy hot reload and `policy test`. Real
//! PostgreSQL from `tests/scripts/pg.sh`, the real binary, psql and raw sockets.

// Test code: a step that fails fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{Gateway, GatewaySpec, Scratch};

fn self_signed(dir: &Scratch) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = dir.0.join("gw-cert.pem");
    let key = dir.0.join("gw-key.pem");
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    (cert, key)
}

#[test]
fn tls_listener_serves_sslmode_require_and_plain_listener_declines_ssl() {
    let dir = Scratch::new("tls");
    let (cert, key) = self_signed(&dir);
    let gw = Gateway::start(GatewaySpec {
        tls: Some((cert, key)),
        ..Default::default()
    });
    let token = gw.token("pipeline-7", &["ci"]);
    let r = gw.psql_env(
        &token,
        "orders",
        &["-c", "SELECT 'over tls'"],
        &[("PGSSLMODE", "require")],
    );
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.stdout.trim(), "over tls");
    // A TLS listener refuses clients that do not negotiate TLS: the token would cross in clear.
    let r = gw.psql_env(
        &token,
        "orders",
        &["-c", "SELECT 1"],
        &[("PGSSLMODE", "disable")],
    );
    assert!(!r.ok);
    assert!(
        r.stderr.contains("this listener requires TLS"),
        "{}",
        r.stderr
    );
    // A plain listener declines sslmode=require the way PostgreSQL does.
    let plain = Gateway::start(GatewaySpec::default());
    let r = plain.psql_env(
        &token,
        "orders",
        &["-c", "SELECT 1"],
        &[("PGSSLMODE", "require")],
    );
    assert!(!r.ok);
    assert!(
        r.stderr.contains("server does not support SSL"),
        "{}",
        r.stderr
    );
    let token = plain.token("pipeline-7", &["ci"]);
    let r = plain.psql_env(
        &token,
        "orders",
        &["-c", "SELECT 1"],
        &[("PGSSLMODE", "prefer")],
    );
    assert!(r.ok, "sslmode=prefer falls back to plain: {}", r.stderr);
}

#[test]
fn target_logins_with_scram_md5_and_trust_use_only_the_held_credential() {
    let extra = r#"
[[connections]]
name = "orders_md5"
protocol = "postgres"
target = "TARGET"
database = "orders"
user = "app_md5"
password_file = "orders.password"

[[connections]]
name = "orders_trust"
protocol = "postgres"
target = "TARGET"
database = "orders"
user = "app_trust"
"#
    .replace("TARGET", &format!("127.0.0.1:{}", support::pg().port));
    let gw = Gateway::start(GatewaySpec {
        extra: &extra,
        ..Default::default()
    });
    let token = gw.token("pipeline-7", &["ci"]);
    for (db, user) in [
        ("orders", "app"),
        ("orders_md5", "app_md5"),
        ("orders_trust", "app_trust"),
    ] {
        let r = gw.psql_env(&token, db, &["-c", "SELECT current_user"], &[]);
        assert!(r.ok, "{db}: {}", r.stderr);
        assert_eq!(r.stdout.trim(), user);
    }
}

#[test]
fn startup_parameters_pass_only_through_the_allow_list() {
    let gw = Gateway::start(GatewaySpec::default());
    let token = gw.token("pipeline-7", &["ci"]);
    let r = gw.psql_env(
        &token,
        "orders",
        &[
            "-c",
            "SHOW application_name",
            "-c",
            "SHOW search_path",
            "-c",
            "SHOW work_mem",
        ],
        &[
            ("PGAPPNAME", "nightly-export"),
            ("PGOPTIONS", "-c search_path=pg_catalog -c work_mem=77MB"),
        ],
    );
    assert!(r.ok, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], "nightly-export", "application_name passes");
    assert_eq!(
        lines[1], "\"$user\", public",
        "options did not reach the target"
    );
    assert_ne!(lines[2], "77MB");
}

/// Log in over a raw socket with the v3 protocol; returns the stream after ReadyForQuery.
fn raw_login(port: u16, token: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let params = b"user\0ci\0database\0orders\0\0";
    let mut startup = Vec::new();
    startup.extend_from_slice(&((8 + params.len()) as u32).to_be_bytes());
    startup.extend_from_slice(&196608u32.to_be_bytes());
    startup.extend_from_slice(params);
    s.write_all(&startup).unwrap();
    let mut auth = [0u8; 9];
    s.read_exact(&mut auth).unwrap();
    assert_eq!(auth[0], b'R');
    assert_eq!(
        &auth[5..9],
        &3u32.to_be_bytes(),
        "cleartext password requested"
    );
    let mut pw = vec![b'p'];
    pw.extend_from_slice(&((4 + token.len() + 1) as u32).to_be_bytes());
    pw.extend_from_slice(token.as_bytes());
    pw.push(0);
    s.write_all(&pw).unwrap();
    loop {
        let mut head = [0u8; 5];
        s.read_exact(&mut head).unwrap();
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        s.read_exact(&mut body).unwrap();
        assert_ne!(
            head[0],
            b'E',
            "login failed: {}",
            String::from_utf8_lossy(&body)
        );
        if head[0] == b'Z' {
            return s;
        }
    }
}

/// The connection is closed by the peer (EOF or reset), possibly after an error message.
fn closed(mut s: TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return true,
            Ok(_) => continue,
        }
    }
    false
}

#[test]
fn oversized_and_malformed_frames_close_only_that_connection() {
    let gw = Gateway::start(GatewaySpec::default());
    let token = gw.token("pipeline-7", &["ci"]);

    // A startup packet claiming 2 GiB: refused before anything is allocated.
    let mut s = TcpStream::connect(("127.0.0.1", gw.pg_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&0x7fff_fff0u32.to_be_bytes()).unwrap();
    s.write_all(&196608u32.to_be_bytes()).unwrap();
    assert!(closed(s));

    // After login: a Query message claiming 2 GiB.
    let mut s = raw_login(gw.pg_port, &token);
    s.write_all(&[b'Q', 0x7f, 0xff, 0xff, 0xf0]).unwrap();
    assert!(closed(s));

    // A length below the header's own size.
    let mut s = raw_login(gw.pg_port, &token);
    s.write_all(&[b'Q', 0, 0, 0, 2]).unwrap();
    assert!(closed(s));

    // An unknown message type.
    let mut s = raw_login(gw.pg_port, &token);
    s.write_all(&[b'!', 0, 0, 0, 4]).unwrap();
    assert!(closed(s));

    // A Parse whose query is not NUL-terminated.
    let mut s = raw_login(gw.pg_port, &token);
    s.write_all(&[b'P', 0, 0, 0, 8, 0, b'S', b'E', b'L'])
        .unwrap();
    assert!(closed(s));

    // The gateway is still up for everyone else.
    let r = gw.psql(&token, "SELECT 'alive'");
    assert!(r.ok && r.stdout.contains("alive"), "{}", r.stderr);
}

#[test]
fn policy_reloads_on_sighup_and_a_bad_policy_keeps_the_old_one() {
    let gw = Gateway::start(GatewaySpec::default());
    let token = gw.token("pipeline-7", &["ci"]);
    assert!(gw.psql(&token, "SELECT 1").ok);
    let policy = gw.scratch.0.join("policy.cedar");
    let paused = format!(
        "{}\n@id(\"reads-paused\")\n@reason(\"reads are paused for maintenance\")\nforbid(principal, action == Action::\"sql.read\", resource);\n",
        support::TEST_POLICY
    );
    std::fs::write(&policy, &paused).unwrap();
    Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = gw.psql(&token, "SELECT 1");
        if !r.ok && r.stderr.contains("reads are paused for maintenance") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new policy never took effect: {}",
            r.stderr
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A broken policy is refused; the one in force stays.
    std::fs::write(
        &policy,
        "permit(principal, action, resource) when { nonsense };",
    )
    .unwrap();
    Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.log_text().contains("policy reload refused") {
        assert!(
            Instant::now() < deadline,
            "no refusal logged: {}",
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = gw.psql(&token, "SELECT 1");
    assert!(
        !r.ok && r.stderr.contains("reads are paused"),
        "old policy stays: {}",
        r.stderr
    );
    let changes = gw.audit(&["--kind", "policy"]);
    assert_eq!(changes.len(), 1, "one new version took effect: {changes:?}");
    assert_eq!(changes[0]["detail"]["version"], 2);
    assert!(
        changes[0]["detail"]["policies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "reads-paused")
    );
}

#[test]
fn policy_test_explains_decisions() {
    let gw = Gateway::start(GatewaySpec::default());
    let run = |args: &[&str]| -> (Option<i32>, String) {
        let out = Command::new(support::bin())
            .args(["policy", "test", "--config"])
            .arg(&gw.config)
            // Every question here is about one CI identity on `orders`.
            .args([
                "--who",
                "pipeline-7",
                "--group",
                "ci",
                "--connection",
                "orders",
            ])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (code, out) = run(&["--action", "sql.ddl"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("no-ddl"), "{out}");
    let (code, out) = run(&["--action", "sql.read"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("read"), "{out}");
    let (code, out) = run(&["--action", "sql", "--sql", "DELETE FROM orders"]);
    assert_eq!(code, Some(2), "unbounded delete is not permitted: {out}");
    assert!(
        out.contains("sql.write") && out.contains("unbounded: true"),
        "{out}"
    );
}

/// Frontend message with a tag and body.
fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn parse_msg(name: &str, sql: &str) -> Vec<u8> {
    let mut b = cstr(name);
    b.extend(cstr(sql));
    b.extend_from_slice(&0u16.to_be_bytes());
    msg(b'P', &b)
}

fn bind_execute(portal: &str, statement: &str) -> Vec<u8> {
    let mut b = cstr(portal);
    b.extend(cstr(statement));
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // no formats, no params, no result formats
    let mut out = msg(b'B', &b);
    let mut e = cstr(portal);
    e.extend_from_slice(&0u32.to_be_bytes());
    out.extend(msg(b'E', &e));
    out
}

/// Read backend messages until `readies` ReadyForQuery; returns (tag, body) pairs.
fn read_until_ready(s: &mut TcpStream, readies: usize) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut seen = 0;
    while seen < readies {
        let mut head = [0u8; 5];
        s.read_exact(&mut head).unwrap();
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        s.read_exact(&mut body).unwrap();
        if head[0] == b'Z' {
            seen += 1;
        }
        out.push((head[0], body));
    }
    out
}

#[test]
fn a_refusal_inside_a_pipeline_answers_in_order_and_skips_to_sync() {
    let gw = Gateway::start(GatewaySpec::default());
    let token = gw.token("pipeline-7", &["ci"]);
    let mut s = raw_login(gw.pg_port, &token);
    // One write: an allowed statement, a refused one with its Bind/Execute, Sync, then a
    // simple query that must still work.
    let mut batch = parse_msg("", "SELECT 1");
    batch.extend(bind_execute("", ""));
    batch.extend(parse_msg("", "DROP TABLE orders"));
    batch.extend(bind_execute("", ""));
    batch.extend(msg(b'S', &[]));
    batch.extend(msg(b'Q', &cstr("SELECT 2")));
    s.write_all(&batch).unwrap();
    let replies = read_until_ready(&mut s, 2);
    let tags: String = replies.iter().map(|(t, _)| *t as char).collect();
    // ParseComplete, BindComplete, DataRow, CommandComplete for SELECT 1; the refusal; Bind
    // and Execute skipped; ReadyForQuery; then the simple query's answer.
    assert_eq!(tags, "12DCEZTDCZ", "{replies:?}");
    let error = String::from_utf8_lossy(&replies[4].1);
    assert!(
        error.contains("42501") && error.contains("schema changes go through migrations"),
        "{error}"
    );
    assert!(
        !error.contains("PORTCULLIS_DENIED"),
        "the substitute never shows: {error}"
    );
    assert_eq!(
        replies[8].1[..],
        b"SELECT 1\0"[..],
        "simple query completed"
    );
    assert_eq!(
        support::pg().admin_sql("SELECT count(*) FROM pg_tables WHERE tablename = 'orders'"),
        "1"
    );

    // A named statement refused at Parse is never created on the target: executing it later
    // fails there, and is refused here as unknown before that.
    let mut batch = parse_msg("evil", "DELETE FROM orders");
    batch.extend(msg(b'S', &[]));
    batch.extend(bind_execute("", "evil"));
    batch.extend(msg(b'S', &[]));
    s.write_all(&batch).unwrap();
    let replies = read_until_ready(&mut s, 2);
    let tags: String = replies.iter().map(|(t, _)| *t as char).collect();
    assert_eq!(tags, "EZEZ", "{replies:?}");
    assert_eq!(
        support::pg().admin_sql("SELECT count(*) > 0 FROM orders"),
        "t"
    );
}

#[test]
fn an_execute_refused_after_a_policy_change_fails_only_its_batch() {
    let gw = Gateway::start(GatewaySpec::default());
    let token = gw.token("pipeline-7", &["ci"]);
    let mut s = raw_login(gw.pg_port, &token);
    let mut batch = parse_msg("q", "SELECT count(*) FROM customers");
    batch.extend(msg(b'S', &[]));
    s.write_all(&batch).unwrap();
    let tags: String = read_until_ready(&mut s, 1)
        .iter()
        .map(|(t, _)| *t as char)
        .collect();
    assert_eq!(tags, "1Z");
    // Reads are forbidden from now on; the statement prepared before stays on the target.
    let policy = format!(
        "{}\n@id(\"reads-paused\")\n@reason(\"reads are paused\")\nforbid(principal, action == Action::\"sql.read\", resource);\n",
        support::TEST_POLICY
    );
    std::fs::write(gw.scratch.0.join("policy.cedar"), policy).unwrap();
    Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.audit(&["--kind", "policy"]).is_empty() {
        assert!(Instant::now() < deadline, "policy never reloaded");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut batch = bind_execute("", "q");
    batch.extend(msg(b'S', &[]));
    batch.extend(msg(b'Q', &cstr("SELECT 3")));
    s.write_all(&batch).unwrap();
    let replies = read_until_ready(&mut s, 2);
    let tags: String = replies.iter().map(|(t, _)| *t as char).collect();
    // BindComplete, the refusal, one ReadyForQuery for the batch; the next query is judged
    // by the new policy too.
    assert_eq!(tags, "2EZEZ", "{replies:?}");
    assert!(String::from_utf8_lossy(&replies[1].1).contains("reads are paused"));
}
