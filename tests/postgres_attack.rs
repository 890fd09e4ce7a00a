//! End to end through the Postgres gateway, as an attacker would try it: statements built to
//! exhaust the gateway. A real PostgreSQL (`tests/scripts/pg.sh`), the real `portcullis`
//! binary, psql and pgbench.

mod support;

use std::io::Write;
use std::process::Stdio;

use support::{Gateway, GatewaySpec};

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
