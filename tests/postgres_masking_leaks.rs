//! Ways a protected value was tried out of the masking gateway through psql, each a test:
//! aliases, planner statistics, error text, casts, string and JSON functions, aggregates and
//! whole-row values.

// Test code: a step that fails fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::masking::{assert_no_originals, gateway, leak_attempt};
use support::pg;

#[test]
fn leak_alias_keeps_the_origin_column_rule() {
    let gw = gateway();
    let token = gw.token("analyst", &["ci"]);
    let out = leak_attempt(
        &gw,
        &token,
        "SELECT ssn AS x, email AS y FROM customers_pii WHERE id = 1",
    );
    // The catalog names x's origin (customers_pii.ssn); y is scanned, not masked whole.
    assert_eq!(out.trim(), "[REDACTED:column]|[REDACTED:email]");
}

/// The planner's statistics sample column values (most common values, histogram bounds):
/// a masked session cannot read them, in any spelling; an unmasked group can.
#[test]
fn leak_planner_statistics() {
    let gw = gateway();
    pg().admin_sql("ANALYZE customers_pii");
    let token = gw.token("analyst", &["ci"]);
    for sql in [
        "SELECT most_common_vals FROM pg_stats WHERE tablename = 'customers_pii'",
        "SELECT attname, histogram_bounds::text FROM pg_catalog.pg_stats",
        "SELECT * FROM (SELECT * FROM pg_stats_ext) s",
        "SELECT stavalues1 FROM pg_statistic",
    ] {
        let r = gw.psql(&token, sql);
        assert!(!r.ok, "{sql}: {}", r.stdout);
        assert!(
            r.stderr.contains("statistics are not readable"),
            "{sql}: {}",
            r.stderr
        );
        assert_no_originals(sql, &r.stdout);
    }
    let dpo = gw.token("dpo-1", &["ci", "dpo"]);
    let r = gw.psql(
        &dpo,
        "SELECT count(*) > 0 FROM pg_stats WHERE tablename = 'customers_pii'",
    );
    assert_eq!((r.ok, r.stdout.trim()), (true, "t"), "{}", r.stderr);
}

/// An error about a value the statement derived from protected data does not quote it:
/// the value is masked whole, whether the statement names the column or reads it through
/// the whole row.
#[test]
fn leak_error_text_quoting_a_derived_value() {
    let gw = gateway();
    let token = gw.token("analyst", &["ci"]);
    // The first SSN, 078051120, with its digits turned into letters.
    let transformed = "ahiafbbca";
    for sql in [
        "SELECT translate(ssn, '0123456789', 'abcdefghij')::int FROM customers_pii WHERE id = 1",
        "SELECT translate(c::text, '0123456789', 'abcdefghij')::int FROM customers_pii c WHERE id = 1",
    ] {
        let r = gw.psql(&token, sql);
        assert!(!r.ok, "{sql}");
        assert!(
            r.stderr.contains("invalid input syntax"),
            "{sql}: {}",
            r.stderr
        );
        assert!(!r.stderr.contains(transformed), "{sql}: {}", r.stderr);
        assert_no_originals(sql, &r.stderr);
    }
    // Statements that read no covered table keep their errors as PostgreSQL wrote them.
    let r = gw.psql(&token, "SELECT 'abc'::int");
    assert!(r.stderr.contains("\"abc\""), "{}", r.stderr);
}

#[test]
fn leak_casts() {
    let gw = gateway();
    let token = gw.token("analyst", &["ci"]);
    let out = leak_attempt(
        &gw,
        &token,
        "SELECT ssn::bigint, card::varchar(40), email::varchar FROM customers_pii WHERE id = 1",
    );
    // The bigint can't hold a replacement text: NULL (psql prints it empty).
    assert!(out.starts_with("|[REDACTED:column]|"), "{out}");
    let out = leak_attempt(
        &gw,
        &token,
        "SELECT card::varchar(40), email::text FROM customers_pii WHERE id = 1",
    );
    assert_eq!(out.trim(), "[REDACTED:card]|[REDACTED:email]");
}

#[test]
fn leak_concatenation() {
    let gw = gateway();
    let token = gw.token("analyst", &["ci"]);
    let out = leak_attempt(
        &gw,
        &token,
        "SELECT name || ' ' || ssn || ' ' || email FROM customers_pii",
    );
    assert!(out.contains("[REDACTED:column]"), "{out}");
    let out = leak_attempt(
        &gw,
        &token,
        "SELECT name || ' <' || email || '> ' || card FROM customers_pii WHERE id = 1",
    );
    assert_eq!(
        out.trim(),
        "Ada Lovelace <[REDACTED:email]> [REDACTED:card]"
    );
}

#[test]
fn leak_substr() {
    let gw = gateway();
    let token = gw.token("analyst", &["ci"]);
    let out = leak_attempt(
        &gw,
        &token,
        "SELECT substr(ssn, 1, 9), substr(card, 1, 19) FROM customers_pii WHERE id = 1",
    );
    assert!(out.contains("[REDACTED:column]"), "{out}");
}

#[test]
fn leak_upper() {
    let gw = gateway();
    let token = gw.token("analyst", &["ci"]);
    leak_attempt(&gw, &token, "SELECT upper(ssn) FROM customers_pii");
    let out = leak_attempt(
        &gw,
        &token,
        "SELECT upper(email) FROM customers_pii WHERE id = 1",
    );
    assert_eq!(out.trim(), "[REDACTED:email]");
    assert!(!out.contains("ADA.LOVELACE"), "{out}");
}

#[test]
fn leak_row_to_json() {
    let gw = gateway();
    let token = gw.token("analyst", &["ci"]);
    let out = leak_attempt(&gw, &token, "SELECT row_to_json(c) FROM customers_pii c");
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["ssn"], "[REDACTED:column]");
    assert_eq!(first["email"], "[REDACTED:email]");
    assert_eq!(first["name"], "Ada Lovelace");
    leak_attempt(
        &gw,
        &token,
        "SELECT row_to_json(c)::text FROM customers_pii c",
    );
}

#[test]
fn leak_json_agg() {
    let gw = gateway();
    let token = gw.token("analyst", &["ci"]);
    let out = leak_attempt(&gw, &token, "SELECT json_agg(c) FROM customers_pii c");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("still valid JSON");
    assert_eq!(doc.as_array().unwrap().len(), 5);
    leak_attempt(
        &gw,
        &token,
        "SELECT jsonb_agg(jsonb_build_object('who', name, 'mail', email, 'id', ssn)) FROM customers_pii",
    );
}

#[test]
fn leak_array_agg() {
    let gw = gateway();
    let token = gw.token("analyst", &["ci"]);
    let out = leak_attempt(
        &gw,
        &token,
        "SELECT array_agg(email), array_agg(card) FROM customers_pii",
    );
    assert!(out.contains("[REDACTED:email]"), "{out}");
    leak_attempt(&gw, &token, "SELECT array_agg(ssn) FROM customers_pii");
}

#[test]
fn leak_string_agg() {
    let gw = gateway();
    let token = gw.token("analyst", &["ci"]);
    let out = leak_attempt(
        &gw,
        &token,
        "SELECT string_agg(email || ' ' || coalesce(card, '-'), '; ') FROM customers_pii",
    );
    assert!(out.contains("[REDACTED:email] [REDACTED:card]"), "{out}");
    leak_attempt(
        &gw,
        &token,
        "SELECT string_agg(ssn, ',') FROM customers_pii",
    );
}

#[test]
fn leak_format() {
    let gw = gateway();
    let token = gw.token("analyst", &["ci"]);
    leak_attempt(
        &gw,
        &token,
        "SELECT format('%s <%s> %s / %s', name, email, ssn, iban) FROM customers_pii",
    );
    let out = leak_attempt(
        &gw,
        &token,
        "SELECT format('%s paid with %s', email, card) FROM customers_pii WHERE id = 2",
    );
    assert_eq!(out.trim(), "[REDACTED:email] paid with [REDACTED:card]");
}

#[test]
fn leak_base64_of_a_rule_column_is_masked_whole() {
    let gw = gateway();
    let token = gw.token("analyst", &["ci"]);
    let sql = "SELECT id, encode(convert_to(ssn, 'UTF8'), 'base64') FROM customers_pii ORDER BY id";
    let out = leak_attempt(&gw, &token, sql);
    // The statement mentions a covered column, so the expression column is masked whole;
    // the id column has a table origin and is judged by it.
    assert!(out.starts_with("1|[REDACTED:column]\n"), "{out}");
}

#[test]
fn leak_whole_row_values_of_a_table_with_a_covered_column() {
    let gw = gateway();
    let token = gw.token("analyst", &["ci"]);
    // The statement names no covered column: the row's type (or an anonymous record) is what
    // tells the gateway covered data is inside, and the value is masked whole.
    for sql in [
        "SELECT c FROM customers_pii c ORDER BY id",
        "SELECT t FROM (SELECT * FROM customers_pii) t",
        "SELECT array_agg(c) FROM customers_pii c",
        "SELECT ROW(c.*) FROM customers_pii c",
    ] {
        let out = leak_attempt(&gw, &token, sql);
        assert!(out.contains("[REDACTED:column]"), "{sql}: {out}");
    }
    // A whole row of a table with nothing covered passes as it is.
    let out = leak_attempt(&gw, &token, "SELECT o FROM orders o ORDER BY id LIMIT 1");
    assert!(out.starts_with("(1,"), "{out}");
}

/// Whole rows read through expressions (`c::text`, `to_jsonb(c)`, `row(c.*)`) carry a covered
/// column's value without naming it, and a string function can disguise it character for
/// character: such outputs are masked whole. A table with nothing covered passes.
#[test]
fn leak_whole_row_values_through_expressions() {
    let gw = gateway();
    let token = gw.token("analyst", &["ci"]);
    let disguise = |s: &str| -> String {
        s.chars()
            .map(|c| match c.to_digit(10) {
                Some(d) => (b'a' + d as u8) as char,
                None => c,
            })
            .collect()
    };
    let ssn = disguise("078051120");
    for sql in [
        "SELECT translate(c::text, '0123456789', 'abcdefghij') FROM customers_pii c",
        "SELECT translate(to_jsonb(c)->>'ssn', '0123456789', 'abcdefghij') FROM customers_pii c",
        "SELECT translate(row(c.*)::text, '0123456789', 'abcdefghij') FROM customers_pii AS c",
        "SELECT translate(customers_pii::text, '0123456789', 'abcdefghij') FROM customers_pii",
    ] {
        let out = leak_attempt(&gw, &token, sql);
        assert!(!out.contains(&ssn), "{sql}: {out}");
        assert!(out.contains("[REDACTED:column]"), "{sql}: {out}");
    }
    let out = leak_attempt(
        &gw,
        &token,
        "SELECT upper(o::text) FROM orders o ORDER BY id LIMIT 1",
    );
    assert!(out.starts_with("(1,"), "{out}");
}

/// PostgreSQL names a view as its columns' origin. A view that renames a covered column, or
/// computes from it, is seen through to the column it reads; a view over a view, or one the
/// gateway cannot read column by column (a UNION), is masked whole when it reads a covered
/// table. Columns passed through from unprotected columns stay as they are.
#[test]
fn leak_views_that_rename_or_compute_a_covered_column() {
    let gw = gateway();
    pg().admin_sql(
        "CREATE OR REPLACE VIEW pii_renamed AS SELECT id, name, ssn AS tax_id, upper(ssn) AS shout, \
           translate(ssn, '0123456789', 'abcdefghij') AS disguised FROM customers_pii; \
         CREATE OR REPLACE VIEW pii_nested AS SELECT id, disguised AS d2 FROM pii_renamed; \
         CREATE OR REPLACE VIEW pii_union AS \
           SELECT id, translate(ssn, '0123456789', 'abcdefghij') AS v FROM customers_pii \
           UNION ALL SELECT id, name FROM customers_pii; \
         GRANT SELECT ON pii_renamed, pii_nested, pii_union TO app;",
    );
    let token = gw.token("analyst", &["ci"]);
    let disguised = "ahiafbbca"; // the first SSN, digits as letters
    let out = leak_attempt(
        &gw,
        &token,
        "SELECT id, name, tax_id, shout, disguised FROM pii_renamed WHERE id = 1",
    );
    assert_eq!(
        out.trim(),
        "1|Ada Lovelace|[REDACTED:column]|[REDACTED:column]|[REDACTED:column]"
    );
    for sql in [
        "SELECT d2 FROM pii_nested WHERE id = 1",
        "SELECT v FROM pii_union ORDER BY id, v",
        "SELECT * FROM pii_renamed",
    ] {
        let out = leak_attempt(&gw, &token, sql);
        assert!(!out.contains(disguised), "{sql}: {out}");
        assert!(out.contains("[REDACTED:column]"), "{sql}: {out}");
    }
    // An exempt group reads the view in clear.
    let dpo = gw.token("dpo-1", &["ci", "dpo"]);
    let r = gw.psql(&dpo, "SELECT disguised FROM pii_renamed WHERE id = 1");
    assert_eq!(r.stdout.trim(), disguised, "{}", r.stderr);
}

/// A NOTIFY payload can carry a covered value out of a statement (`pg_notify('c', ssn)`):
/// once the session has read covered data, payloads reach it masked whole; detectors apply to
/// every payload.
#[test]
fn leak_notify_payloads() {
    let gw = gateway();
    let token = gw.token("analyst", &["ci"]);
    let r = gw.psql(
        &token,
        "LISTEN pii; SELECT pg_notify('pii', ssn) FROM customers_pii WHERE id = 1; \
         SELECT pg_notify('pii', 'mail ada.lovelace@example.com');",
    );
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(all.contains("Asynchronous notification \"pii\""), "{all}");
    assert_no_originals("notify", &all);
    assert!(!all.contains("078051120"), "{all}");
    assert!(all.contains("[REDACTED:column]"), "{all}");
}

/// A statement can be run in one message and its rows read in another: a cursor declared
/// over a covered value and fetched later, a statement prepared in SQL and executed later,
/// and `RETURNING` of a write. Each is masked as the statement that computes the rows.
#[test]
fn leak_cursors_sql_prepared_statements_and_returning() {
    let gw = gateway();
    let token = gw.token("analyst", &["ci"]);
    let disguised = "ahiafbbca"; // the first SSN, digits as letters
    let attempts: [&[&str]; 4] = [
        &[
            "-c",
            "BEGIN",
            "-c",
            "DECLARE cur CURSOR FOR SELECT translate(ssn, '0123456789', 'abcdefghij') FROM customers_pii ORDER BY id",
            "-c",
            "FETCH ALL FROM cur",
            "-c",
            "COMMIT",
        ],
        &[
            "-c",
            "BEGIN",
            "-c",
            "DECLARE cur CURSOR FOR SELECT translate(c::text, '0123456789', 'abcdefghij') FROM customers_pii c ORDER BY id",
            "-c",
            "FETCH 2 FROM cur",
            "-c",
            "COMMIT",
        ],
        &[
            "-c",
            "PREPARE p AS SELECT translate(ssn, '0123456789', 'abcdefghij') FROM customers_pii ORDER BY id",
            "-c",
            "EXECUTE p",
        ],
        &[
            "-c",
            "BEGIN",
            "-c",
            "UPDATE customers_pii SET name = name WHERE id = 1 \
             RETURNING translate(ssn, '0123456789', 'abcdefghij'), translate(customers_pii::text, '0123456789', 'abcdefghij')",
            "-c",
            "ROLLBACK",
        ],
    ];
    for args in attempts {
        let r = gw.psql_args(&token, args);
        let all = format!("{}{}", r.stdout, r.stderr);
        assert!(!all.contains(disguised), "{args:?}: {all}");
        assert_no_originals("cursor", &all);
        assert!(
            all.contains("[REDACTED:column]") || !r.ok,
            "{args:?}: {all}"
        );
    }
}
