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

#[test]
fn audit_is_durable_before_results_reach_the_client_and_verify_detects_tampering() {
    let mut gw = Gateway::start(GatewaySpec::default());
    let token = gw.token("pipeline-7", &["ci"]);
    let r = gw.psql(&token, "SELECT 42 AS answer");
    assert!(r.ok, "{}", r.stderr);
    gw.kill9();
    // The command's event survived SIGKILL.
    let evs = gw.audit(&["--kind", "command"]);
    assert!(evs.iter().any(|e| e["statement"] == "SELECT 42 AS answer"));
    let v = gw.cli(&["audit", "verify"]);
    assert!(v.ok, "intact chain verifies: {}{}", v.stdout, v.stderr);
    assert!(v.stdout.contains("audit chain intact"));

    // Edit one event's statement in the database behind the gateway's back.
    let db = gw.scratch.0.join("state/portcullis.db");
    let py = format!(
        "import sqlite3; c=sqlite3.connect('{}'); c.execute(\"UPDATE event_blocks SET lines=replace(lines,'SELECT 42','SELECT 41') WHERE lines LIKE '%SELECT 42%'\"); c.commit()",
        db.display()
    );
    assert!(
        Command::new("python3")
            .args(["-c", &py])
            .status()
            .unwrap()
            .success()
    );
    let v = gw.cli(&["audit", "verify"]);
    assert!(!v.ok, "tampering must be detected");
    assert!(v.stderr.contains("BROKEN"), "{}", v.stderr);

    // Deleting an event (here the first; the command may be the newest) is detected too.
    let py = format!(
        "import sqlite3; c=sqlite3.connect('{}'); c.execute('UPDATE event_blocks SET lines = substr(lines, instr(lines, char(10)) + 1) WHERE first_seq = 1'); c.commit()",
        db.display()
    );
    assert!(
        Command::new("python3")
            .args(["-c", &py])
            .status()
            .unwrap()
            .success()
    );
    assert!(!gw.cli(&["audit", "verify"]).ok);
}

#[test]
fn sessions_are_listed_and_replayed_as_a_transcript() {
    let gw = Gateway::start(GatewaySpec::default());
    let token = gw.token("pipeline-7", &["ci"]);
    assert!(gw.psql(&token, "SELECT count(*) FROM customers").ok);
    assert!(!gw.psql(&token, "DROP TABLE customers").ok);
    let list = gw.cli(&["sessions", "list"]);
    assert!(list.ok, "{}", list.stderr);
    let ids: Vec<String> = list
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert_eq!(ids.len(), 2, "{}", list.stdout);
    assert!(list.stdout.contains("builtin/pipeline-7"));
    let first = gw.cli(&["replay", &ids[0]]);
    assert!(first.ok, "{}", first.stderr);
    assert!(
        first
            .stdout
            .contains("orders=> SELECT count(*) FROM customers"),
        "{}",
        first.stdout
    );
    assert!(first.stdout.contains("1 row"), "{}", first.stdout);
    let second = gw.cli(&["replay", &ids[1]]);
    assert!(
        second.stdout.contains("DENY by [no-ddl]"),
        "{}",
        second.stdout
    );
}

#[test]
fn token_exchange_gives_a_short_key_that_works_as_a_password() {
    let gw = Gateway::start(GatewaySpec::default());
    let token = gw.token("pipeline-7", &["ci"]);
    let out = Command::new(support::bin())
        .args([
            "token",
            "exchange",
            "--gateway",
            &format!("http://127.0.0.1:{}", gw.admin_port),
            "--ttl",
            "5m",
        ])
        .env("PORTCULLIS_TOKEN", &token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(key.len() <= 64, "fits TDS's 128-character password: {key}");
    let r = gw.psql(&key, "SELECT current_user");
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(
        r.stdout.trim(),
        "app",
        "the target sees only the gateway's credential"
    );
    let starts = gw.audit(&["--kind", "session_start"]);
    assert_eq!(starts.last().unwrap()["identity"]["method"], "access_key");
    assert_eq!(
        starts.last().unwrap()["identity"]["principal"],
        "builtin/pipeline-7"
    );
    // A garbage key is refused.
    let r = gw.psql("pcx_0000_doesnotexist", "SELECT 1");
    assert!(!r.ok && r.stderr.contains("access key"), "{}", r.stderr);
}

#[test]
fn admin_listener_serves_health_metrics_and_the_builtin_issuer() {
    let gw = Gateway::start(GatewaySpec::default());
    let token = gw.token("pipeline-7", &["ci"]);
    assert!(gw.psql(&token, "SELECT 1").ok);
    assert!(!gw.psql(&token, "DROP TABLE orders").ok);
    let get = |path: &str| -> String {
        let out = Command::new("curl")
            .args(["-fsS", &format!("http://127.0.0.1:{}{path}", gw.admin_port)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(get("/healthz").trim(), "ok");
    assert_eq!(get("/readyz").trim(), "ready");
    let m = get("/metrics");
    assert!(
        m.contains("portcullis_statements_total{protocol=\"postgres\",verdict=\"deny\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("portcullis_sessions_total{protocol=\"postgres\"} 2"),
        "{m}"
    );
    // The store catches up with the journal: every recorded event is indexed, none lag.
    let value = |m: &str, name: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from metrics: {m}"))
    };
    let mut m = m;
    for _ in 0..50 {
        if value(&m, "portcullis_audit_store_lag_events") == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        m = get("/metrics");
    }
    assert_eq!(value(&m, "portcullis_audit_store_lag_events"), 0, "{m}");
    let events = value(&m, "portcullis_audit_events_total");
    assert!(events >= 4, "{m}");
    assert_eq!(value(&m, "portcullis_audit_indexed_total"), events, "{m}");
    let disc: serde_json::Value =
        serde_json::from_str(&get("/.well-known/openid-configuration")).unwrap();
    assert_eq!(
        disc["issuer"],
        format!("http://127.0.0.1:{}", gw.admin_port)
    );
    let jwks: serde_json::Value = serde_json::from_str(&get("/.well-known/jwks.json")).unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "EC");
}

#[test]
fn config_check_reports_every_problem_with_its_path() {
    let dir = support::Scratch::new("cfg");
    let cfg = dir.0.join("bad.toml");
    std::fs::write(
        &cfg,
        "[gateway]\nstate_dir='s'\npolicy='p.cedar'\nbogus_key=1\n",
    )
    .unwrap();
    let out = Command::new(support::bin())
        .args(["config", "check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus_key"));
    std::fs::write(
        dir.0.join("p.cedar"),
        "permit(principal, action == Action::\"nope\", resource);",
    )
    .unwrap();
    std::fs::write(
        &cfg,
        "[gateway]\nstate_dir='s'\npolicy='p.cedar'\n[[listeners]]\nprotocol='postgres'\nlisten='nowhere'\n[[connections]]\nname='x'\nprotocol='postgres'\ntarget='db'\n",
    )
    .unwrap();
    let out = Command::new(support::bin())
        .args(["config", "check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("listeners[0].listen"), "{err}");
    assert!(err.contains("connections[0].target"), "{err}");
    assert!(err.contains("connections[0].user"), "{err}");
    assert!(err.contains("gateway.policy"), "{err}");
}

#[test]
fn the_examples_pass_config_check_and_decide_as_their_comments_say() {
    // The examples as shipped, with stand-ins for the key files the demo creates.
    let dir = support::Scratch::new("examples");
    let ex = dir.0.join("examples");
    let keys = dir.0.join(".demo/keys");
    std::fs::create_dir_all(&ex).unwrap();
    std::fs::create_dir_all(&keys).unwrap();
    for f in [
        "quickstart.toml",
        "quickstart.cedar",
        "ssh.toml",
        "ssh.cedar",
    ] {
        std::fs::copy(support::root().join("examples").join(f), ex.join(f)).unwrap();
    }
    let key = support::ssh_keygen(&keys.join("web_ed25519"), "web");
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let public: Vec<&str> = public.split_whitespace().take(2).collect();
    std::fs::write(
        keys.join("known_hosts"),
        format!("127.0.0.1 {}\n", public.join(" ")),
    )
    .unwrap();

    let cli = |args: &[&str]| {
        let out = Command::new(support::bin())
            .args(args)
            .current_dir(&ex)
            .env("ORDERS_PASSWORD", "stand-in")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    for config in ["quickstart.toml", "ssh.toml"] {
        let (ok, out) = cli(&["config", "check", "--config", config]);
        assert!(ok, "{config}: {out}");
    }
    let decide = |config: &str, group: &str, conn: &str, action: &str, extra: &[&str]| {
        let mut args = vec![
            "policy",
            "test",
            "--config",
            config,
            "--who",
            "someone",
            "--group",
            group,
            "--connection",
            conn,
            "--action",
            action,
        ];
        args.extend_from_slice(extra);
        let (_, out) = cli(&args);
        // The verdict line (after how a --sql statement was classified), and everything.
        let verdict = out
            .lines()
            .find(|l| ["ALLOW", "DENY", "REVIEW"].iter().any(|v| l.starts_with(v)))
            .unwrap_or_default()
            .to_string();
        (verdict, out)
    };
    let read = decide(
        "quickstart.toml",
        "ci",
        "orders",
        "sql",
        &["--sql", "SELECT * FROM orders"],
    );
    assert!(read.0.starts_with("ALLOW sql.read"), "{}", read.1);
    let drop = decide(
        "quickstart.toml",
        "ci",
        "orders",
        "sql",
        &["--sql", "DROP TABLE orders"],
    );
    assert!(drop.0.starts_with("DENY sql.ddl"), "{}", drop.1);
    assert!(drop.1.contains("no-ddl"), "{}", drop.1);
    let tunnel = |target: &str| {
        let context = format!("{{\"command\":\"direct-tcpip {target}\"}}");
        decide(
            "ssh.toml",
            "ops",
            "web",
            "ssh.forward",
            &["--context", &context],
        )
    };
    let (allowed, out) = tunnel("127.0.0.1:5432");
    assert!(allowed.starts_with("ALLOW ssh.forward"), "{out}");
    assert!(out.contains("ops-db-tunnel"), "{out}");
    let (refused, out) = tunnel("10.0.0.1:22");
    assert!(refused.starts_with("DENY ssh.forward"), "{out}");
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

/// A real OpenID Connect provider (node-oidc-provider, started by `tests/scripts/oidc.sh`)
/// issues client-credentials JWTs; the gateway finds its keys through discovery and JWKS.
#[test]
fn tokens_from_a_real_oidc_provider_are_verified_through_discovery_and_jwks() {
    let dir = support::Scratch::new("oidc");
    let port = support::free_port();
    let out = Command::new("bash")
        .arg(support::root().join("tests/scripts/oidc.sh"))
        .arg("start")
        .arg(&dir.0)
        .arg(port.to_string())
        .arg(std::process::id().to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "oidc provider: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let extra = format!(
        r#"
[[identity.issuers]]
name = "ci-idp"
issuer = "http://127.0.0.1:{port}"
audience = "api://portcullis"
keep_claims = ["repository"]
"#
    );
    let gw = Gateway::start(GatewaySpec {
        extra: &extra,
        ..Default::default()
    });
    let fetch = |client: &str, secret: &str, resource: &str| -> String {
        let out = Command::new("curl")
            .args([
                "-fsS",
                "-u",
                &format!("{client}:{secret}"),
                "-d",
                "grant_type=client_credentials",
            ])
            .args(["-d", &format!("resource={resource}")])
            .arg(format!("http://127.0.0.1:{port}/token"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "token endpoint: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    };
    let token = fetch("ci-job", "ci-secret", "api://portcullis");
    let r = gw.psql(&token, "SELECT count(*) FROM customers");
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.stdout.trim(), "3");
    let start = gw.audit(&["--kind", "session_start"]).pop().unwrap();
    assert_eq!(start["identity"]["principal"], "ci-idp/ci-job");
    assert_eq!(
        start["identity"]["groups"],
        serde_json::json!(["ci", "deployers"])
    );
    assert_eq!(
        start["identity"]["claims"]["repository"],
        "portcullis-gateway/portcullis"
    );

    let other = fetch("other-aud", "secret", "api://other");
    let r = gw.psql(&other, "SELECT 1");
    assert!(!r.ok);
    assert!(
        r.stderr.contains("audience is not accepted"),
        "{}",
        r.stderr
    );
    let _ = Command::new("bash")
        .arg(support::root().join("tests/scripts/oidc.sh"))
        .arg("stop")
        .arg(&dir.0)
        .status();
}

/// The state directory and everything in it (store, journal, keys) is private to the
/// gateway's user, also after someone loosened it; the audit file too.
#[test]
fn the_state_directory_and_audit_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mut gw = Gateway::start(GatewaySpec::default());
    let token = gw.token("pipeline-7", &["ci"]);
    assert!(gw.psql(&token, "SELECT 1").ok);
    let dir = gw.scratch.0.clone();
    let state = dir.join("state");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    fn all(p: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        out.push(p.to_path_buf());
        if p.is_dir() {
            for e in std::fs::read_dir(p).unwrap() {
                all(&e.unwrap().path(), out);
            }
        }
    }
    let check = |what: &str| {
        let mut paths = Vec::new();
        all(&state, &mut paths);
        assert!(paths.len() > 3, "{paths:?}");
        for p in &paths {
            let want = if p.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode(p), want, "{what}: {}", p.display());
        }
        assert_eq!(mode(&dir.join("audit.jsonl")), 0o600, "{what}");
    };
    check("as created");
    // Loosened by hand while stopped: closed again on start.
    gw.kill9();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        state.join("portcullis.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    gw.spawn();
    check("after a restart");
}

/// Verbs that only read the state directory need none of the targets' secrets; `config check`
/// and `serve` still report a missing one.
#[test]
fn cli_verbs_that_do_not_reach_targets_need_no_target_secrets() {
    let gw = Gateway::start(GatewaySpec::default());
    let token = gw.token("pipeline-7", &["ci"]);
    assert!(gw.psql(&token, "SELECT 1").ok);
    let secret = gw.scratch.0.join("orders.password");
    let kept = std::fs::read(&secret).unwrap();
    std::fs::remove_file(&secret).unwrap();
    for args in [
        &["audit", "verify"][..],
        &["sessions", "list"],
        &["audit", "query", "--kind", "command"],
        &["token", "issue", "--sub", "auditor"],
        &[
            "policy",
            "test",
            "--who",
            "x",
            "--group",
            "ci",
            "--connection",
            "orders",
            "--action",
            "sql.read",
        ],
    ] {
        let r = gw.cli(args);
        assert!(r.ok, "{args:?}: {}", r.stderr);
    }
    let r = gw.cli(&["config", "check"]);
    assert!(
        !r.ok && r.stderr.contains("orders.password"),
        "{}",
        r.stderr
    );
    std::fs::write(&secret, kept).unwrap();
}

/// Zero window: no byte of a command reaches PostgreSQL before its audit event is written.
/// Repeated `kill -9` of the gateway under concurrent load (pgbench TPC-B and an insert
/// script), then every committed row has the event of the statement that wrote it, and the
/// chain verifies.
#[test]
fn kill_9_under_load_leaves_no_executed_statement_without_its_event() {
    use std::process::Stdio;
    let mut gw = Gateway::start(GatewaySpec::default());
    let token = gw.token("crash", &["ci"]);
    let init = Command::new("pgbench")
        .args(["-i", "-s", "1", "-q", "-h", "127.0.0.1", "-p"])
        .arg(pg().port.to_string())
        .args(["-U", "app", "orders"])
        .env("PGPASSWORD", &pg().password)
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    pg().admin_sql(
        "DROP TABLE IF EXISTS crash_rows; CREATE TABLE crash_rows (c int, r int); \
         ALTER TABLE crash_rows OWNER TO app",
    );
    let dir = support::Scratch::new("crash");
    let script = dir.0.join("insert.sql");
    std::fs::write(
        &script,
        "\\set r random(1, 2000000000)\nINSERT INTO crash_rows (c, r) VALUES (:client_id, :r);\n",
    )
    .unwrap();
    let bench = |gw: &Gateway, args: &[&str]| {
        Command::new("pgbench")
            .args(["-n", "-T", "10", "-M", "simple", "-h", "127.0.0.1", "-p"])
            .arg(gw.pg_port.to_string())
            .args(["-U", "ci"])
            .args(args)
            .arg("orders")
            .env("PGPASSWORD", &token)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    for round in 0..4u64 {
        let mut tpcb = bench(&gw, &["-c", "2"]);
        let mut insert = bench(&gw, &["-c", "3", "-f", script.to_str().unwrap()]);
        std::thread::sleep(Duration::from_millis(600 + 170 * round));
        gw.kill9();
        let _ = (tpcb.wait(), insert.wait());
        gw.spawn();
    }
    let statements: std::collections::HashSet<String> = gw
        .audit(&["--kind", "command"])
        .into_iter()
        .filter_map(|e| e["statement"].as_str().map(str::to_string))
        .collect();
    let rows = pg().admin_sql("SELECT c || ',' || r FROM crash_rows");
    let rows: Vec<&str> = rows.lines().collect();
    assert!(rows.len() > 100, "the load ran: {} rows", rows.len());
    for row in &rows {
        let (c, r) = row.split_once(',').unwrap();
        let text = format!("INSERT INTO crash_rows (c, r) VALUES ({c}, {r});");
        assert!(
            statements.contains(&text),
            "committed without an event: {text}"
        );
    }
    let history = pg().admin_sql(
        "SELECT tid || ', ' || bid || ', ' || aid || ', ' || delta FROM pgbench_history",
    );
    let history: Vec<&str> = history.lines().collect();
    assert!(history.len() > 20, "TPC-B ran: {} rows", history.len());
    for h in &history {
        let text = format!(
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ({h}, CURRENT_TIMESTAMP);"
        );
        assert!(
            statements.contains(&text),
            "committed without an event: {text}"
        );
    }
    let v = gw.cli(&["audit", "verify"]);
    assert!(v.ok, "{}{}", v.stdout, v.stderr);
}

/// TLS from the gateway to PostgreSQL, libpq's sslmodes against a real server with a
/// certificate for `localhost` from a CA the test cluster creates (`tests/scripts/pg.sh`). The
/// role `app_tls` may only log in over TLS, so a session through it proves the encryption.
#[test]
fn tls_to_the_target_follows_sslmode() {
    let ca = pg().dir.join("tls/ca.crt");
    let dir = support::Scratch::new("tls-target");
    // A CA the server's certificate does not chain to.
    let other = dir.0.join("other-ca.crt");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=other", "-keyout"])
        .arg(dir.0.join("other.key"))
        .arg("-out")
        .arg(&other)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let port = pg().port;
    let conn = |name: &str, host: &str, tls: &str| {
        format!(
            "[[connections]]\nname = \"{name}\"\nprotocol = \"postgres\"\ntarget = \"{host}:{port}\"\n\
             database = \"orders\"\nuser = \"app_tls\"\npassword_file = \"orders.password\"\n{tls}\n"
        )
    };
    let extra = [
        conn(
            "full",
            "localhost",
            &format!("sslrootcert = \"{}\"", ca.display()),
        ),
        conn(
            "ca",
            "127.0.0.1",
            &format!(
                "sslmode = \"verify-ca\"\nsslrootcert = \"{}\"",
                ca.display()
            ),
        ),
        conn(
            "name",
            "127.0.0.1",
            &format!("sslrootcert = \"{}\"", ca.display()),
        ),
        conn(
            "wrongca",
            "localhost",
            &format!("sslrootcert = \"{}\"", other.display()),
        ),
        conn("require", "127.0.0.1", "sslmode = \"require\""),
        conn("plain", "127.0.0.1", ""),
    ]
    .concat();
    let gw = Gateway::start(GatewaySpec {
        extra: &extra,
        ..GatewaySpec::default()
    });
    let token = gw.token("pipeline-7", &["ci"]);
    let ssl = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    for db in ["full", "ca", "require"] {
        let r = gw.psql_env(&token, db, &["-c", ssl], &[]);
        assert_eq!((r.ok, r.stdout.trim()), (true, "t"), "{db}: {}", r.stderr);
    }
    for (db, why) in [
        ("name", "not valid for name"),
        ("wrongca", "UnknownIssuer"),
        ("plain", "no encryption"),
    ] {
        let r = gw.psql_env(&token, db, &["-c", "SELECT 1"], &[]);
        assert!(!r.ok, "{db} must fail");
        assert!(r.stderr.contains(why), "{db}: {}", r.stderr);
    }
}

/// Revoking an access key takes effect in sessions already open with it: within a second
/// every further command is refused, with the reason, and audited.
#[test]
fn revoking_an_access_key_refuses_further_commands_of_live_sessions() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    let gw = Gateway::start(GatewaySpec::default());
    let token = gw.token("pipeline-7", &["ci"]);
    let out = Command::new(support::bin())
        .args(["token", "exchange", "--gateway"])
        .arg(format!("http://127.0.0.1:{}", gw.admin_port))
        .env("PORTCULLIS_TOKEN", &token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let id = format!("ak_{}", key.split('_').nth(1).unwrap());

    let mut psql = gw
        .psql_command(&key, "orders")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = psql.stdin.take().unwrap();
    let mut lines = BufReader::new(psql.stdout.take().unwrap()).lines();
    writeln!(stdin, "SELECT 'before';").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "before");

    let r = gw.cli(&["token", "revoke", &id]);
    assert!(r.ok, "{}", r.stderr);
    std::thread::sleep(Duration::from_millis(1000));
    writeln!(stdin, "SELECT 'after';").unwrap();
    writeln!(stdin, "SELECT 'marker' AS done;").unwrap();
    drop(stdin);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let out = psql.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(rest.is_empty(), "nothing ran after the revoke: {rest:?}");
    assert_eq!(
        stderr.matches("access key was revoked").count(),
        2,
        "{stderr}"
    );
    let refused = gw
        .audit(&["--kind", "command"])
        .into_iter()
        .filter(|e| {
            e["verdict"] == "deny" && e["reason"].as_str().is_some_and(|r| r.contains("revoked"))
        })
        .count();
    assert_eq!(refused, 2);
    // And a new session with it is refused at login.
    let r = gw.psql(&key, "SELECT 1");
    assert!(!r.ok && r.stderr.contains("access key"), "{}", r.stderr);
}

/// Every file under `dir` (recursively) with its length and modification time.
fn tree(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), m.len(), m.modified().unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn anchors_catch_a_cut_tail_and_verify_writes_nothing() {
    let anchors_dir = support::Scratch::new("anchors");
    let anchors = anchors_dir.0.join("anchors.jsonl");
    let extra = format!(
        "anchors = \"{}\"\nanchor_every = \"1s\"\n",
        anchors.display()
    );
    let mut gw = Gateway::start(GatewaySpec {
        extra: &extra,
        ..Default::default()
    });
    let token = gw.token("pipeline-7", &["ci"]);
    for i in 0..3 {
        let r = gw.psql(&token, &format!("SELECT {i} AS n"));
        assert!(r.ok, "{}", r.stderr);
    }
    // While it runs, the head is signed within the interval.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&anchors)
        .unwrap_or_default()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "no anchor within the interval");
        std::thread::sleep(Duration::from_millis(100));
    }
    let v = gw.cli(&["audit", "verify"]);
    assert!(v.ok, "{}{}", v.stdout, v.stderr);
    assert!(v.stdout.contains("audit chain intact"), "{}", v.stdout);
    assert!(v.stdout.contains("anchors match"), "{}", v.stdout);

    // Stopped, the final head is signed; every event, store and journal alike, is counted,
    // and verifying writes nothing.
    gw.stop();
    let state = gw.scratch.0.join("state");
    let before = tree(&state);
    let v = gw.cli(&["audit", "verify"]);
    assert!(v.ok, "{}{}", v.stdout, v.stderr);
    assert_eq!(tree(&state), before, "verify wrote to the state directory");
    let events = gw.audit(&[]).len();
    assert!(
        v.stdout
            .contains(&format!("audit chain intact: {events} events verified")),
        "{} (listed {events})",
        v.stdout
    );
    let last_line = std::fs::read_to_string(&anchors).unwrap();
    let last: serde_json::Value = serde_json::from_str(last_line.lines().last().unwrap()).unwrap();
    assert_eq!(last["seq"].as_u64(), Some(events as u64));

    // Another key's public half does not vouch for these anchors.
    let other = support::Scratch::new("other-key");
    let other_key = other.0.join("k.pub");
    std::fs::write(&other_key, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n").unwrap();
    let v = gw.cli(&[
        "audit",
        "verify",
        "--anchor-key",
        other_key.to_str().unwrap(),
    ]);
    assert!(!v.ok);
    assert!(
        v.stderr.contains("does not verify with the anchor key"),
        "{}",
        v.stderr
    );

    // Cut the newest events out of the store, as a truncated file or a DELETE would.
    let db = state.join("portcullis.db");
    let py = format!(
        "import sqlite3; c=sqlite3.connect('{}'); c.execute('DELETE FROM event_blocks WHERE first_seq = (SELECT max(first_seq) FROM event_blocks)'); c.commit()",
        db.display()
    );
    assert!(
        Command::new("python3")
            .args(["-c", &py])
            .status()
            .unwrap()
            .success()
    );
    let v = gw.cli(&["audit", "verify"]);
    assert!(!v.ok, "a cut tail must not verify: {}", v.stdout);
    assert!(
        v.stderr.contains("BROKEN") && v.stderr.contains("cut from the tail"),
        "{}",
        v.stderr
    );
    // Nor does the gateway go on appending to a chain that lost its tail.
    let refused = gw.spawn_refused();
    assert!(refused.contains("are missing"), "{refused}");
}
