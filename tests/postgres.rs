//! End to end through the Postgres gateway: a real PostgreSQL started by
//! `tests/scripts/pg.sh`, the real `portcullis` binary, and real clients (psql, pgbench).

// Test code: a step that fails fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{Gateway, GatewaySpec, pg};

#[test]
fn allowed_read_returns_rows_and_is_audited() {
    let gw = Gateway::start(GatewaySpec::default());
    let token = gw.token("pipeline-7", &["ci"]);
    let r = gw.psql(&token, "SELECT count(*) FROM orders");
    assert!(r.ok, "psql failed: {}", r.stderr);
    assert_eq!(r.stdout.trim(), "100");

    let cmds = gw.audit(&["--kind", "command"]);
    let ev = cmds
        .iter()
        .find(|e| e["statement"] == "SELECT count(*) FROM orders")
        .expect("command event");
    assert_eq!(ev["verdict"], "allow");
    assert_eq!(ev["action"], "sql.read");
    assert_eq!(ev["tables"][0], "orders");
    let starts = gw.audit(&["--kind", "session_start"]);
    assert_eq!(starts[0]["identity"]["principal"], "builtin/pipeline-7");
    assert_eq!(starts[0]["identity"]["groups"][0], "ci");
    // The command's completion carries its row count.
    let ends = gw.audit(&[
        "--kind",
        "command_end",
        "--session",
        ev["session"].as_str().unwrap(),
    ]);
    assert!(ends.iter().any(|e| e["rows"] == 1), "{ends:?}");
}

#[test]
fn denied_ddl_shows_reason_and_never_reaches_the_target() {
    let gw = Gateway::start(GatewaySpec::default());
    let token = gw.token("pipeline-7", &["ci"]);
    pg().admin_sql("CREATE TABLE IF NOT EXISTS scratch_ddl (x int)");
    let r = gw.psql(&token, "DROP TABLE scratch_ddl");
    assert!(!r.ok);
    assert!(
        r.stderr.contains(
            "ERROR:  portcullis: schema changes go through migrations, not ad-hoc sessions"
        ),
        "stderr: {}",
        r.stderr
    );
    assert!(r.stderr.contains("no-ddl"), "policy id shown: {}", r.stderr);
    assert_eq!(
        pg().admin_sql("SELECT count(*) FROM pg_tables WHERE tablename = 'scratch_ddl'"),
        "1"
    );
    let ev = gw.audit(&["--kind", "command"]);
    let denied = ev
        .iter()
        .find(|e| e["statement"] == "DROP TABLE scratch_ddl")
        .expect("event");
    assert_eq!(denied["verdict"], "deny");
    assert_eq!(denied["policies"][0], "no-ddl");
}

#[test]
fn session_goes_on_after_a_denied_statement_and_aborts_an_open_transaction() {
    let gw = Gateway::start(GatewaySpec::default());
    let token = gw.token("pipeline-7", &["ci"]);
    let script = "\\set ON_ERROR_STOP 0\n\
        SELECT 'before';\n\
        TRUNCATE orders;\n\
        SELECT 'after';\n\
        BEGIN;\n\
        UPDATE orders SET status = 'tx' WHERE id = 1;\n\
        DROP TABLE orders;\n\
        COMMIT;\n\
        SELECT status FROM orders WHERE id = 1;\n";
    let out = gw
        .psql_command(&token, "orders")
        .arg("-f")
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .expect("stdin")
                .write_all(script.as_bytes())?;
            c.wait_with_output()
        })
        .expect("psql -f -");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("before") && stdout.contains("after"),
        "stdout: {stdout} stderr: {stderr}"
    );
    assert_eq!(
        stderr.matches("portcullis: schema changes").count(),
        2,
        "stderr: {stderr}"
    );
    // As with any error in PostgreSQL, the transaction was aborted: the UPDATE did not commit.
    assert!(
        stdout.trim_end().ends_with("new") || stdout.trim_end().ends_with("shipped"),
        "stdout: {stdout}"
    );
    assert_eq!(
        pg().admin_sql("SELECT count(*) FROM orders WHERE status = 'tx'"),
        "0"
    );
}

#[test]
fn multi_statement_query_is_refused_whole_if_any_statement_is() {
    let gw = Gateway::start(GatewaySpec::default());
    let token = gw.token("pipeline-7", &["ci"]);
    pg().admin_sql("CREATE TABLE IF NOT EXISTS multi_t (x int); TRUNCATE multi_t");
    let r = gw.psql(
        &token,
        "INSERT INTO multi_t VALUES (1); DROP TABLE multi_t; SELECT 1",
    );
    assert!(!r.ok);
    assert!(r.stderr.contains("schema changes"), "{}", r.stderr);
    assert_eq!(
        pg().admin_sql("SELECT count(*) FROM multi_t"),
        "0",
        "the INSERT must not have run"
    );
}

#[test]
fn writes_hidden_in_ctes_and_unbounded_writes_are_refused_for_readers() {
    let gw = Gateway::start(GatewaySpec::default());
    let reader = gw.token("dashboard", &["reader"]);
    let ci = gw.token("pipeline-7", &["ci"]);
    let before = pg().admin_sql("SELECT count(*) FROM orders");
    for sql in [
        "WITH gone AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM gone",
        "WITH a AS (WITH b AS (UPDATE orders SET status = 'x' WHERE id = 1 RETURNING *) SELECT * FROM b) SELECT * FROM a",
        "SELECT * INTO orders_copy FROM orders",
        "EXPLAIN ANALYZE DELETE FROM orders WHERE id = 1",
        "select 1; delete from orders where id = 2",
    ] {
        let r = gw.psql(&reader, sql);
        assert!(!r.ok, "reader must not run {sql}");
        assert!(r.stderr.contains("portcullis:"), "{sql}: {}", r.stderr);
    }
    // An unbounded UPDATE is refused even for the writer group.
    let r = gw.psql(&ci, "UPDATE orders SET status = 'oops'");
    assert!(!r.ok, "unbounded update must be refused");
    let r = gw.psql(&ci, "UPDATE orders SET status = status WHERE id = 3");
    assert!(r.ok, "bounded update allowed: {}", r.stderr);
    assert_eq!(pg().admin_sql("SELECT count(*) FROM orders"), before);
    assert_eq!(
        pg().admin_sql("SELECT count(*) FROM orders WHERE status IN ('x','oops')"),
        "0"
    );
}

#[test]
fn admin_functions_and_unparseable_text_are_refused() {
    let gw = Gateway::start(GatewaySpec::default());
    let token = gw.token("pipeline-7", &["ci"]);
    for (sql, reason) in [
        (
            "SELECT pg_read_file('/etc/passwd')",
            "server administration",
        ),
        ("SET ROLE postgres", "server administration"),
        (
            "COPY orders TO PROGRAM 'cat > /tmp/x'",
            "server administration",
        ),
        (
            "DO $$ BEGIN EXECUTE 'DROP TABLE orders'; END $$",
            "server administration",
        ),
        ("SELEKT * FROM orders", "could not be classified"),
    ] {
        let r = gw.psql(&token, sql);
        assert!(!r.ok, "{sql} must be refused");
        assert!(r.stderr.contains(reason), "{sql}: {}", r.stderr);
    }
}

#[test]
fn pgbench_simple_extended_and_prepared_protocols_pass_through() {
    let gw = Gateway::start(GatewaySpec::default());
    let token = gw.token("bench", &["ci"]);
    let dir = support::Scratch::new("bench");
    let script = dir.0.join("read.sql");
    std::fs::write(
        &script,
        "\\set id random(1, 100)\nSELECT id, amount, status FROM orders WHERE id = :id;\nUPDATE orders SET amount = amount WHERE id = :id;\n",
    )
    .unwrap();
    for mode in ["simple", "extended", "prepared"] {
        let r = gw.pgbench(
            &token,
            &[
                "-n",
                "-c",
                "2",
                "-t",
                "50",
                "-M",
                mode,
                "-f",
                script.to_str().unwrap(),
            ],
        );
        assert!(r.ok, "pgbench -M {mode} failed: {}{}", r.stdout, r.stderr);
        assert!(
            r.stdout
                .contains("number of transactions actually processed: 100/100"),
            "{mode}: {}",
            r.stdout
        );
    }
    let reads = gw
        .audit(&["--kind", "command"])
        .into_iter()
        .filter(|e| {
            e["statement"]
                .as_str()
                .is_some_and(|s| s.starts_with("SELECT id, amount"))
        })
        .count();
    assert_eq!(reads, 300, "every execution is a decided, audited command");
}

#[test]
fn extended_protocol_refusal_reports_the_reason_and_the_session_continues() {
    let gw = Gateway::start(GatewaySpec::default());
    let token = gw.token("bench", &["ci"]);
    let dir = support::Scratch::new("bench");
    let script = dir.0.join("ddl.sql");
    std::fs::write(&script, "CREATE TABLE should_not_exist (x int);\n").unwrap();
    for mode in ["extended", "prepared"] {
        let r = gw.pgbench(
            &token,
            &[
                "-n",
                "-c",
                "1",
                "-t",
                "1",
                "-M",
                mode,
                "-f",
                script.to_str().unwrap(),
            ],
        );
        let all = format!("{}{}", r.stdout, r.stderr);
        assert!(
            all.contains("schema changes go through migrations"),
            "{mode}: {all}"
        );
    }
    assert_eq!(
        pg().admin_sql("SELECT count(*) FROM pg_tables WHERE tablename = 'should_not_exist'"),
        "0"
    );
}

#[test]
fn cancel_request_reaches_the_target() {
    let gw = Gateway::start(GatewaySpec::default());
    let token = gw.token("pipeline-7", &["ci"]);
    let started = Instant::now();
    let child = gw
        .psql_command(&token, "orders")
        .args(["-c", "SELECT pg_sleep(30)"])
        .spawn()
        .unwrap();
    // Wait until the sleep runs on the target, then interrupt psql: it sends CancelRequest.
    let deadline = Instant::now() + Duration::from_secs(10);
    while pg().admin_sql("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'") != "1" {
        assert!(Instant::now() < deadline, "query never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("canceling statement due to user request"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn bad_tokens_are_refused_with_clear_messages() {
    let gw = Gateway::start(GatewaySpec {
        builtin_leeway: 0,
        ..Default::default()
    });
    let good = gw.token("pipeline-7", &["ci"]);
    let parts: Vec<&str> = good.split('.').collect();
    assert_eq!(parts.len(), 3);
    use base64_url as b64;
    // Tampered: same signature, payload with a different subject.
    let payload = String::from_utf8(b64::decode(parts[1]))
        .unwrap()
        .replace("pipeline-7", "pipeline-8");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64::encode(payload.as_bytes()),
        parts[2]
    );
    // alg:none: no signature at all.
    let none = format!(
        "{}.{}.",
        b64::encode(br#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    // HS256 "signed" — an algorithm confusion attempt.
    let hs = format!(
        "{}.{}.{}",
        b64::encode(br#"{"alg":"HS256","typ":"JWT"}"#),
        parts[1],
        parts[2]
    );
    let wrong_aud = gw.token_with("pipeline-7", &["ci"], &["--audience", "api://someone-else"]);
    let expired = gw.token_with("pipeline-7", &["ci"], &["--ttl", "1s"]);
    // Another gateway's built-in issuer: a different issuer URL and key.
    let other = Gateway::start(GatewaySpec::default());
    let foreign = other.token("pipeline-7", &["ci"]);
    std::thread::sleep(Duration::from_millis(2100));

    for (token, expect) in [
        ("not-a-token", "token is malformed"),
        (tampered.as_str(), "signature is invalid"),
        (none.as_str(), "algorithm `none` is not accepted"),
        (hs.as_str(), "algorithm `HS256` is not accepted"),
        (wrong_aud.as_str(), "audience is not accepted"),
        (expired.as_str(), "token has expired"),
        (foreign.as_str(), "is not trusted by this gateway"),
    ] {
        let r = gw.psql(token, "SELECT 1");
        assert!(!r.ok);
        assert!(
            r.stderr.contains(expect),
            "expected `{expect}`, got: {}",
            r.stderr
        );
    }
    // Refusals at login are written by the flusher within a few milliseconds, not before
    // the client hears: wait for the last one.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut failed = gw.audit(&["--kind", "auth_failed"]);
    while failed.len() < 7 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        failed = gw.audit(&["--kind", "auth_failed"]);
    }
    assert_eq!(failed.len(), 7, "{failed:?}");
}

#[test]
fn unknown_connection_and_denied_connect_are_fatal_at_login() {
    // An SSH connection is no Postgres connection: a psql client naming it is told it does
    // not exist, and nothing is attempted against its target.
    let ssh = "[[connections]]\nname = \"web\"\nprotocol = \"ssh\"\ntarget = \"127.0.0.1:1\"\n\
               user = \"deploy\"\npassword_file = \"orders.password\"\n\
               host_key_fingerprint = \"SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"\n";
    let gw = Gateway::start(GatewaySpec {
        extra: ssh,
        ..GatewaySpec::default()
    });
    let outsider = gw.token("stranger", &["visitors"]);
    let r = gw.psql(&outsider, "SELECT 1");
    assert!(!r.ok);
    assert!(r.stderr.contains("FATAL:  portcullis:"), "{}", r.stderr);
    let token = gw.token("pipeline-7", &["ci"]);
    let r: support::Run = gw
        .psql_command(&token, "payroll")
        .args(["-c", "SELECT 1"])
        .output()
        .unwrap()
        .into();
    assert!(
        r.stderr
            .contains("connection \"payroll\" is not configured"),
        "{}",
        r.stderr
    );
    let r = gw.psql_env(&token, "web", &["-c", "SELECT 1"], &[]);
    assert!(
        !r.ok && r.stderr.contains("connection \"web\" is not configured"),
        "{}",
        r.stderr
    );
}

#[test]
fn target_down_gives_a_clear_error_and_the_gateway_stays_up() {
    let dead = support::free_port();
    let gw = Gateway::start(GatewaySpec {
        target: Some(format!("127.0.0.1:{dead}")),
        ..Default::default()
    });
    let token = gw.token("pipeline-7", &["ci"]);
    for _ in 0..2 {
        let r = gw.psql(&token, "SELECT 1");
        assert!(!r.ok);
        assert!(r.stderr.contains("is unreachable"), "{}", r.stderr);
    }
}

#[test]
fn target_dying_mid_query_ends_only_that_session() {
    let gw = Gateway::start(GatewaySpec::default());
    let token = gw.token("pipeline-7", &["ci"]);
    let child = gw
        .psql_command(&token, "orders")
        .args(["-c", "SELECT pg_sleep(20), 'victim'"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let q = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%''victim''%' AND pid <> pg_backend_pid()";
    while pg().admin_sql(q).is_empty() {
        assert!(Instant::now() < deadline, "victim query never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("terminating connection"), "{stderr}");
    let r = gw.psql(&token, "SELECT 'still here'");
    assert!(r.ok && r.stdout.contains("still here"), "{}", r.stderr);
}

/// Minimal base64url without padding, for building hostile tokens in tests.
mod base64_url {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    pub fn encode(data: &[u8]) -> String {
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..=chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    pub fn decode(s: &str) -> Vec<u8> {
        let vals: Vec<u32> = s
            .bytes()
            .map(|c| A.iter().position(|&a| a == c).unwrap() as u32)
            .collect();
        let mut out = Vec::new();
        for chunk in vals.chunks(4) {
            let mut n = 0u32;
            for (i, v) in chunk.iter().enumerate() {
                n |= v << (18 - 6 * i);
            }
            for i in 0..chunk.len().saturating_sub(1) {
                out.push((n >> (16 - 8 * i)) as u8);
            }
        }
        out
    }
}
