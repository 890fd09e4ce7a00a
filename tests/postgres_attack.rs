//! End to end through the Postgres gateway, as an attacker would try it: statements built to
//! exhaust the gateway. A real PostgreSQL (`tests/scripts/pg.sh`), the real `portcullis`
//! binary, psql and pgbench.

// Test code: a step that fails fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Write;
use std::process::Stdio;

use support::{Gateway, GatewaySpec, pg};

/// Deep operator chains, in the simple and the extended protocol, are refused with a reason
/// and audited; the session that sent them, a session already running and a new one go on.
#[test]
fn statements_too_deep_to_analyse_are_refused_and_nothing_crashes() {
    let gw = Gateway::start(GatewaySpec::default());
    let token = gw.token("pipeline-7", &["ci"]);

    // A session in flight while the deep statements arrive.
    let bystander = gw
        .psql_command(&token, "orders")
        .args([
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "SELECT pg_sleep(3)",
            "-c",
            "SELECT 7",
        ])
        .spawn()
        .expect("psql");

    let chain = format!("SELECT 1{}", "+1".repeat(40_000));
    let ands = format!(
        "SELECT id FROM orders WHERE 1=1{}",
        " AND 1=1".repeat(50_000)
    );
    let mut one_session = gw
        .psql_command(&token, "orders")
        .stdin(Stdio::piped())
        .spawn()
        .expect("psql");
    {
        let stdin = one_session.stdin.as_mut().expect("stdin");
        write!(stdin, "{chain};\n{ands};\nSELECT 41 + 1;\n").expect("write");
    }
    let out = one_session.wait_with_output().expect("psql");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("too complex to analyse").count(),
        2,
        "{stderr}"
    );
    assert_eq!(
        stdout.trim(),
        "42",
        "the same session goes on: {stdout} {stderr}"
    );

    // The extended protocol: pgbench sends Parse/Bind/Execute.
    let dir = support::Scratch::new("deep");
    let script = dir.0.join("deep.sql");
    std::fs::write(
        &script,
        format!("SELECT true{};\n", " OR true".repeat(50_000)),
    )
    .unwrap();
    let r = gw.pgbench(
        &token,
        &[
            "-n",
            "-t",
            "1",
            "-M",
            "extended",
            "-f",
            script.to_str().unwrap(),
        ],
    );
    assert!(
        r.stderr.contains("too complex to analyse"),
        "{}{}",
        r.stdout,
        r.stderr
    );

    let by = bystander.wait_with_output().expect("psql");
    assert!(
        by.status.success(),
        "{}",
        String::from_utf8_lossy(&by.stderr)
    );
    assert!(String::from_utf8_lossy(&by.stdout).ends_with("7\n"));
    let r = gw.psql(&token, "SELECT count(*) FROM orders");
    assert_eq!((r.ok, r.stdout.trim()), (true, "100"), "{}", r.stderr);

    let refused: Vec<_> = gw
        .audit(&["--kind", "command"])
        .into_iter()
        .filter(|e| {
            e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("too complex"))
        })
        .collect();
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert!(refused.iter().all(|e| e["verdict"] == "deny"));
}

/// Function calls are decided by what they call, in every spelling PostgreSQL runs as a
/// call: `f(x)`, `(x).f`, and a user-defined function is `sql.call`, named in the context.
#[test]
fn calls_in_any_spelling_are_decided_by_what_they_call() {
    let policy = format!(
        "{}\n@id(\"ci-notes\")\npermit(principal in Group::\"ci\", action == Action::\"sql.call\", resource)\nwhen {{ [\"attack_note\"].containsAll(context.functions) }};\n",
        support::TEST_POLICY
    );
    let gw = Gateway::start(GatewaySpec {
        policy: &policy,
        ..GatewaySpec::default()
    });
    pg().admin_sql(
        "SET ROLE app; CREATE SEQUENCE IF NOT EXISTS attack_seq; \
         CREATE OR REPLACE FUNCTION attack_note(t text) RETURNS int LANGUAGE sql \
         AS $$ INSERT INTO audit_log(note) VALUES (t) RETURNING id $$",
    );
    let reader = gw.token("analyst", &["reader"]);
    let ci = gw.token("pipeline-7", &["ci"]);

    // A session the attacker would end.
    let victim = gw
        .psql_command(&ci, "orders")
        .args([
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "SELECT pg_sleep(3)",
            "-c",
            "SELECT 7",
        ])
        .spawn()
        .expect("psql");
    std::thread::sleep(std::time::Duration::from_millis(500));

    for (sql, reason) in [
        (
            "SELECT ('attack_seq'::regclass).nextval",
            "no policy permits sql.write",
        ),
        (
            "SELECT (42::bigint).pg_advisory_lock",
            "server administration",
        ),
        ("SELECT ('-1'::int).lo_creat", "server administration"),
        (
            "SELECT (pid).pg_terminate_backend FROM pg_stat_activity \
             WHERE query LIKE '%pg_sleep(3)%' AND pid <> pg_backend_pid()",
            "server administration",
        ),
        (
            "SELECT ('SELECT card FROM customers').ts_stat",
            "server administration",
        ),
        (
            "SELECT attack_note('reader')",
            "no policy permits sql.call on orders (it calls attack_note)",
        ),
        (
            "SELECT ('reader'::text).attack_note",
            "no policy permits sql.call on orders (it calls attack_note)",
        ),
    ] {
        let r = gw.psql(&reader, sql);
        assert!(!r.ok, "{sql} must be refused: {}", r.stdout);
        assert!(r.stderr.contains(reason), "{sql}: {}", r.stderr);
    }
    assert_eq!(
        pg().admin_sql("SELECT is_called FROM attack_seq"),
        "f",
        "the sequence never moved"
    );
    assert_eq!(
        pg().admin_sql("SELECT count(*) FROM audit_log WHERE note = 'reader'"),
        "0"
    );
    let v = victim.wait_with_output().expect("psql");
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));

    // Built-ins free of side effects stay reads.
    let r = gw.psql(
        &reader,
        "SELECT lower('ABC'), count(*), max(amount) > 0 FROM orders",
    );
    assert_eq!((r.ok, r.stdout.trim()), (true, "abc|100|t"), "{}", r.stderr);
    // A function policy names is allowed for those it names, and the call is audited as one.
    let r = gw.psql(&ci, "SELECT attack_note('from-ci') > 0");
    assert_eq!((r.ok, r.stdout.trim()), (true, "t"), "{}", r.stderr);
    let ev = gw
        .audit(&["--kind", "command"])
        .into_iter()
        .find(|e| e["statement"] == "SELECT attack_note('from-ci') > 0")
        .expect("audited");
    assert_eq!(
        (ev["action"].as_str(), ev["verdict"].as_str()),
        (Some("sql.call"), Some("allow"))
    );
}
