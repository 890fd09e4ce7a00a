//! End to end through the Postgres gateway: calls hidden behind names the classifier trusts
//! — a user overload of a built-in name, `t.f` with a user function, a user operator, a
//! user cast — are decided as the calls they are, from the target's catalog. A real
//! PostgreSQL (`tests/scripts/pg.sh`), the real `portcullis` binary and psql.

// Test code: a step that fails fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::{Gateway, GatewaySpec, pg};

/// Functions that write a row to `call_log` each time they run, reachable without writing
/// their names as calls.
const SETUP: &str = "SET ROLE app; \
    CREATE TABLE call_log (note text); \
    CREATE TYPE call_text AS (v text); \
    CREATE TABLE call_rows (id int, m call_text); \
    INSERT INTO call_rows VALUES (1, ROW('Abc')); \
    CREATE FUNCTION public.lower(call_text) RETURNS text VOLATILE LANGUAGE sql \
      AS $$ INSERT INTO call_log VALUES ('lower'); SELECT 'x'::text $$; \
    CREATE FUNCTION call_leak(call_rows) RETURNS int VOLATILE LANGUAGE sql \
      AS $$ INSERT INTO call_log VALUES ('leak'); SELECT 1 $$; \
    CREATE FUNCTION call_op(int, int) RETURNS bool VOLATILE LANGUAGE sql \
      AS $$ INSERT INTO call_log VALUES ('op'); SELECT true $$; \
    CREATE OPERATOR ### (leftarg = int, rightarg = int, function = call_op); \
    CREATE TYPE call_num AS (v int); \
    CREATE FUNCTION call_cast(int) RETURNS call_num VOLATILE LANGUAGE sql \
      AS $$ INSERT INTO call_log VALUES ('cast'); SELECT ROW($1)::call_num $$; \
    CREATE CAST (int AS call_num) WITH FUNCTION call_cast(int)";

/// A read-only policy refuses each hidden call with a reason naming the function, and
/// nothing is written; built-ins still read; a policy naming the function allows it as
/// `sql.call`.
#[test]
fn calls_hidden_behind_trusted_names_are_decided_as_calls() {
    // Before the gateway starts, so its first lookup sees them.
    pg().admin_sql(SETUP);
    let policy = format!(
        "{}\n@id(\"ci-calls\")\npermit(principal in Group::\"ci\", action == Action::\"sql.call\", resource)\nwhen {{ [\"lower\", \"call_leak\", \"call_op\", \"call_cast\"].containsAll(context.functions) }};\n",
        support::TEST_POLICY
    );
    let gw = Gateway::start(GatewaySpec {
        policy: &policy,
        ..GatewaySpec::default()
    });
    let reader = gw.token("analyst", &["reader"]);
    let ci = gw.token("pipeline-7", &["ci"]);

    // Every case is tried before any is judged, so a failure lists them all.
    let mut wrong = Vec::new();
    for (sql, function) in [
        // PostgreSQL picks public.lower(call_text) for a call_text argument.
        ("SELECT lower(m) FROM call_rows", "lower"),
        // `c.call_leak` is call_leak(c): c has no column call_leak.
        ("SELECT c.call_leak FROM call_rows c", "call_leak"),
        ("SELECT 1 ### 2", "call_op"),
        ("SELECT 1 OPERATOR(public.###) 2", "call_op"),
        ("SELECT 1::call_num", "call_cast"),
        ("SELECT CAST(7 AS call_num)", "call_cast"),
    ] {
        let r = gw.psql(&reader, sql);
        let reason = format!("no policy permits sql.call on orders (it calls {function})");
        let ev = gw
            .audit(&["--kind", "command"])
            .into_iter()
            .find(|e| e["statement"] == sql)
            .expect("audited");
        let decided = (ev["action"].as_str(), ev["verdict"].as_str());
        if r.ok || !r.stderr.contains(&reason) || decided != (Some("sql.call"), Some("deny")) {
            wrong.push(format!("{sql}: {decided:?} {} {}", r.stdout, r.stderr));
        }
    }
    assert!(wrong.is_empty(), "not refused as calls: {wrong:#?}");
    assert_eq!(pg().admin_sql("SELECT count(*) FROM call_log"), "0");

    // Built-ins no user function shadows still read.
    let r = gw.psql(
        &reader,
        "SELECT initcap('abc'), pg_catalog.lower('ABC'), c.id + 1 FROM call_rows c \
         WHERE c.id IN (1, 2) ORDER BY c.id",
    );
    assert_eq!((r.ok, r.stdout.trim()), (true, "Abc|abc|2"), "{}", r.stderr);
    let r = gw.psql(&reader, "SELECT 1::int8, 2 + 2");
    assert_eq!((r.ok, r.stdout.trim()), (true, "1|4"), "{}", r.stderr);

    // A policy naming the functions lets them run, audited as calls.
    for (sql, out) in [
        ("SELECT lower(m) FROM call_rows", "x"),
        ("SELECT c.call_leak FROM call_rows c", "1"),
        ("SELECT 1 ### 2", "t"),
        ("SELECT 1::call_num", "(1)"),
    ] {
        let r = gw.psql(&ci, sql);
        assert_eq!((r.ok, r.stdout.trim()), (true, out), "{sql}: {}", r.stderr);
        let ev = gw
            .audit(&["--kind", "command"])
            .into_iter()
            .find(|e| e["statement"] == sql && e["verdict"] == "allow")
            .expect("audited");
        assert_eq!(ev["action"].as_str(), Some("sql.call"), "{sql}");
    }
    assert_eq!(
        pg().admin_sql("SELECT string_agg(note, ',' ORDER BY note) FROM call_log"),
        "cast,leak,lower,op"
    );
}

/// A function created through the gateway is known to the session that created it at its
/// next statement, and to other sessions from then on.
#[test]
fn a_function_created_in_the_session_is_decided_at_once() {
    let policy = format!(
        "{}\n@id(\"ci-ddl\")\npermit(principal in Group::\"ci\", action == Action::\"sql.ddl\", resource);\n",
        support::TEST_POLICY.replace(
            "forbid(principal, action == Action::\"sql.ddl\"",
            "forbid(principal in Group::\"reader\", action == Action::\"sql.ddl\""
        )
    );
    pg().admin_sql("SET ROLE app; CREATE TABLE IF NOT EXISTS made_log (note text)");
    let gw = Gateway::start(GatewaySpec {
        policy: &policy,
        ..GatewaySpec::default()
    });
    let ci = gw.token("pipeline-7", &["ci"]);
    let reader = gw.token("analyst", &["reader"]);
    // A session starts (and looks the catalog up) before the function exists.
    let r = gw.psql(&reader, "SELECT upper('a')");
    assert_eq!((r.ok, r.stdout.trim()), (true, "A"), "{}", r.stderr);
    let r = gw.psql_args(
        &ci,
        &[
            "-c",
            "CREATE FUNCTION public.upper(made_log) RETURNS text VOLATILE LANGUAGE sql \
             AS $$ INSERT INTO made_log VALUES ('upper'); SELECT 'x'::text $$",
            "-c",
            "SELECT upper(m) FROM made_log m",
        ],
    );
    assert!(!r.ok, "{}", r.stdout);
    assert!(
        r.stderr
            .contains("no policy permits sql.call on orders (it calls upper)"),
        "{}",
        r.stderr
    );
    let r = gw.psql(&reader, "SELECT upper(m) FROM made_log m");
    assert!(!r.ok, "{}", r.stdout);
    assert!(r.stderr.contains("(it calls upper)"), "{}", r.stderr);
    assert_eq!(pg().admin_sql("SELECT count(*) FROM made_log"), "0");
}
