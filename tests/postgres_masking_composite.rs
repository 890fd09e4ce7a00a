//! A rule on a field of a composite type (`postal_contact.ssn`) holds when the composite
//! column is reached through an expression: a cast to text, JSON functions, whole rows,
//! derived tables, `WITH`, a view, an array of composites, a scalar subquery, `COPY
//! (query)` and error text. Each attempt goes through psql on a masked session, under a
//! policy that lets function calls through, so only masking stands in the way.

// Test code: a step that fails fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::OnceLock;

use support::clients::profiles_fixture;
use support::masking::{assert_no_originals, original_in};
use support::{Gateway, GatewaySpec, TEST_POLICY, pg};

/// Only the composite field is covered: no rule names a table the statements read.
const FIELD_RULE: &str = r#"
[[masking]]
connections = ["orders"]
detectors = ["card", "email", "ssn", "iban", "secret"]
columns = ["postal_contact.ssn"]
unmasked_groups = ["dpo"]
"#;

/// The first contact's SSN with its digits turned into letters.
const DISGUISED: &str = "ahiafbbca";

/// Function calls allowed on top of the test policy.
const CALLS: &str = "@id(\"calls\")\npermit(principal in Group::\"ci\", action == Action::\"sql.call\", resource);\n";

fn gateway() -> Gateway {
    static POLICY: OnceLock<String> = OnceLock::new();
    gateway_with_policy(POLICY.get_or_init(|| format!("{TEST_POLICY}\n{CALLS}")))
}

fn gateway_with_policy(policy: &'static str) -> Gateway {
    profiles_fixture();
    static MORE: OnceLock<()> = OnceLock::new();
    MORE.get_or_init(|| {
        pg().admin_sql(
            "CREATE VIEW contact_view AS SELECT id, contact AS k FROM customer_profiles;
             CREATE TABLE contact_log (id int, past postal_contact[]);
             INSERT INTO contact_log SELECT id, ARRAY[contact] FROM customer_profiles;
             GRANT ALL ON contact_view, contact_log TO app;",
        );
    });
    Gateway::start(GatewaySpec {
        policy,
        extra: FIELD_RULE,
        ..Default::default()
    })
}

#[test]
fn a_composite_field_rule_holds_through_expressions() {
    let gw = gateway();
    let token = gw.token("analyst", &["ci"]);
    let mut failed = Vec::new();
    for sql in [
        "SELECT contact::text FROM customer_profiles ORDER BY id",
        "SELECT row_to_json(contact) FROM customer_profiles ORDER BY id",
        "SELECT to_jsonb(contact)->>'ssn' FROM customer_profiles ORDER BY id",
        "SELECT (contact).ssn AS tax_id FROM customer_profiles ORDER BY id",
        "SELECT to_jsonb(t)::text FROM customer_profiles t ORDER BY id",
        "SELECT t::text FROM customer_profiles t ORDER BY id",
        "SELECT translate(contact::text, '0123456789', 'abcdefghij') FROM customer_profiles",
        "SELECT x FROM (SELECT contact::text AS x FROM customer_profiles) s",
        "WITH c AS (SELECT contact AS k FROM customer_profiles) SELECT k::text FROM c",
        "SELECT k::text FROM contact_view",
        "SELECT past::text FROM contact_log",
        "SELECT array_agg(contact)::text FROM customer_profiles",
        "SELECT (SELECT contact::text FROM customer_profiles WHERE id = 1)",
        "SELECT concat_ws('|', id, contact) FROM customer_profiles",
        "COPY (SELECT contact::text FROM customer_profiles) TO STDOUT",
        "COPY (SELECT translate(contact::text, '0123456789', 'abcdefghij') FROM customer_profiles) TO STDOUT (FORMAT csv)",
    ] {
        let r = gw.psql(&token, sql);
        let all = format!("{}{}", r.stdout, r.stderr);
        let held = r.ok
            && original_in(&all).is_none()
            && !all.contains(DISGUISED)
            && all.contains("[REDACTED:column]");
        if !held {
            failed.push(format!("{sql}\n  -> {all}"));
        }
    }
    assert!(failed.is_empty(), "not held:\n{}", failed.join("\n"));
}

/// An error about a value derived from the composite does not quote it.
#[test]
fn a_composite_field_rule_holds_in_error_text() {
    let gw = gateway();
    let token = gw.token("analyst", &["ci"]);
    for sql in [
        "SELECT contact::text::int FROM customer_profiles WHERE id = 1",
        "SELECT translate(contact::text, '0123456789', 'abcdefghij')::int FROM customer_profiles WHERE id = 1",
    ] {
        let r = gw.psql(&token, sql);
        assert!(!r.ok, "{sql}");
        assert!(
            r.stderr.contains("invalid input syntax"),
            "{sql}: {}",
            r.stderr
        );
        assert!(!r.stderr.contains(DISGUISED), "{sql}: {}", r.stderr);
        assert_no_originals(sql, &r.stderr);
    }
}

/// What reads no covered composite is left as PostgreSQL sent it, and the composite
/// itself is still masked field by field.
#[test]
fn outputs_that_read_no_covered_composite_pass() {
    let gw = gateway();
    let token = gw.token("analyst", &["ci"]);
    let r = gw.psql(
        &token,
        "SELECT count(*), sum(card_number) > 0, max(id) + 1 FROM customer_profiles",
    );
    assert_eq!(r.stdout.trim(), "3|t|4", "{}", r.stderr);
    let r = gw.psql(
        &token,
        "SELECT upper(tier::text) FROM customer_profiles WHERE id = 1",
    );
    assert_eq!(r.stdout.trim(), "GOLD", "{}", r.stderr);
    let r = gw.psql(&token, "SELECT contact FROM customer_profiles WHERE id = 2");
    assert_eq!(
        r.stdout.trim(),
        "(\"2 Side Rd\",,\"[REDACTED:column]\")",
        "{}",
        r.stderr
    );
    let r = gw.psql(&token, "SELECT upper(name) FROM customers_pii WHERE id = 1");
    assert_eq!(r.stdout.trim(), "ADA LOVELACE", "{}", r.stderr);
    // An unmasked group reads the composite in clear through the same expressions.
    let dpo = gw.token("dpo-1", &["ci", "dpo"]);
    let r = gw.psql(
        &dpo,
        "SELECT (contact).ssn FROM customer_profiles WHERE id = 1",
    );
    assert_eq!(r.stdout.trim(), "078051120", "{}", r.stderr);
}

/// The same through the extended protocol (psycopg 3 binds parameters server-side), in text
/// and binary result format.
#[test]
fn a_composite_field_rule_holds_through_the_extended_protocol() {
    let gw = gateway();
    let token = gw.token("analyst", &["ci"]);
    let script = r#"
import sys
import psycopg
conn = psycopg.connect(host="127.0.0.1", port=int(sys.argv[1]), user="ci",
                       password=sys.argv[2], dbname="orders", sslmode="disable")
for binary in (False, True):
    cur = conn.cursor(binary=binary)
    cur.execute("SELECT contact::text, to_jsonb(contact)->>'ssn', concat(contact, '') "
                "FROM customer_profiles WHERE id = %s", (1,))
    print(cur.fetchall())
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, &gw.pg_port.to_string(), &token])
        .env("PYTHONPATH", support::root().join("tests/clients/pylib"))
        .output()
        .expect("run python3");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert_no_originals("psycopg", &all);
    assert_eq!(all.matches("[REDACTED:column]").count(), 6, "{all}");
}

/// A table the session creates with a column of the covered type is known at once: the
/// covered columns are looked up again after the session's DDL.
#[test]
fn a_table_created_in_the_session_is_followed() {
    static POLICY: OnceLock<String> = OnceLock::new();
    let policy = POLICY.get_or_init(|| {
        let no_ddl = "@id(\"no-ddl\")\n@reason(\"schema changes go through migrations, not ad-hoc sessions\")\nforbid(principal, action == Action::\"sql.ddl\", resource);";
        assert!(TEST_POLICY.contains(no_ddl));
        format!(
            "{}\n{CALLS}@id(\"ddl\")\npermit(principal in Group::\"ci\", action == Action::\"sql.ddl\", resource);\n",
            TEST_POLICY.replace(no_ddl, "")
        )
    });
    let gw = gateway_with_policy(policy);
    let token = gw.token("analyst", &["ci"]);
    let r = gw.psql_args(
        &token,
        &[
            "-c",
            "SELECT contact::text FROM customer_profiles WHERE id = 3",
            "-c",
            "CREATE TABLE fresh_contacts (id int, c postal_contact)",
            "-c",
            "INSERT INTO fresh_contacts SELECT id, contact FROM customer_profiles",
            "-c",
            "SELECT c::text FROM fresh_contacts ORDER BY id",
            "-c",
            "DROP TABLE fresh_contacts",
        ],
    );
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(r.ok, "{all}");
    assert_no_originals("fresh table", &all);
    assert!(all.contains("[REDACTED:column]"), "{all}");
}
