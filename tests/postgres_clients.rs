//! Masking keeps real drivers working: asyncpg (binary results, its own catalog
//! introspection of composite and enum types), psycopg 3 (binary and text cursors, composite
//! and enum types registered through its catalog queries, binary COPY read by its loaders),
//! node-postgres (simple and extended protocol, its type parsers, `binary: true` for text-typed
//! results) and PgJDBC (server-prepared statements with binary transfer), through the gateway on
//! a masked session and on an unmasked one (`dpo`), compared with a direct connection.
//! Values: arrays of text holding e-mails and cards, an enum, a covered enum, a composite
//! with a covered field, whole rows, anonymous records, a card number in a `bigint`, a
//! covered integer, binary COPY.

// Test code: a step that fails fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{Value, json};
use support::clients::{Driver, Target, errors, gateway, probe};
use support::masking::assert_no_originals;

const E: &str = "[REDACTED:email]";
const C: &str = "[REDACTED:card]";
const COL: &str = "[REDACTED:column]";

/// The masked `customer_profiles` rows every driver must read (composites as lists).
fn masked_profiles() -> Value {
    json!([
        [
            1,
            "gold",
            null,
            ["vip", E, C],
            ["1 Main St", E, COL],
            null,
            null,
            [1, 2]
        ],
        [
            2,
            "silver",
            null,
            [E, "say \"hi\", {ok}"],
            ["2 Side Rd", null, COL],
            null,
            null,
            []
        ],
        [3, "bronze", null, [], null, 42, null, null]
    ])
}

/// The same driver on the gateway for an unmasked group and directly: equal results.
fn unmasked_equals_direct(driver: Driver) -> Value {
    let gw = gateway();
    let direct = probe(driver, &Target::direct());
    assert!(errors(&direct).is_empty(), "direct: {:?}", errors(&direct));
    let dpo = probe(driver, &Target::gateway(&gw, "dpo-officer", &["ci", "dpo"]));
    assert_eq!(
        dpo, direct,
        "{driver:?}: the unmasked session differs from direct"
    );
    let masked = probe(driver, &Target::gateway(&gw, "analyst", &["ci"]));
    assert!(
        errors(&masked).is_empty(),
        "{driver:?} on a masked session: {:?}",
        errors(&masked)
    );
    assert_no_originals(&format!("{driver:?}"), &masked.to_string());
    masked
}

/// `SELECT c FROM customers_pii c` reads as `SELECT *` does: each field masked as its
/// column (the rule on `ssn`, the detectors on the rest), the shape kept.
fn assert_whole_rows_like_star(whole: &Value, star: &Value) {
    let whole = whole.as_array().unwrap();
    let star = star.as_array().unwrap();
    assert_eq!(whole.len(), 5, "{whole:?}");
    for (w, s) in whole.iter().zip(star) {
        assert_eq!(&w[0], s);
    }
    assert_eq!(star[0][4], COL);
    assert_eq!(star[0][2], E);
    assert_eq!(star[0][1], "Ada Lovelace");
}

#[test]
fn asyncpg_binary_results_and_introspection_work_on_masked_sessions() {
    let m = unmasked_equals_direct(Driver::Asyncpg);
    assert_eq!(m["profiles"], masked_profiles());
    assert_eq!(m["card_bigint"], json!([[null], [null], [42]]));
    assert_eq!(m["email_array"], json!([[[E, E, E, null, E]]]));
    // `array_agg(contact)` is computed from a column whose type has a covered field
    // (`postal_contact.ssn`): masked whole, its shape kept (text fields replaced, NULLs kept).
    assert_eq!(
        m["contact_array"],
        json!([[[[COL, COL, COL], [COL, null, COL], null]]])
    );
    assert_whole_rows_like_star(&m["whole_rows"], &m["star"]);
    // `row(name, email)` of a table a rule covers: an anonymous record is masked whole,
    // its shape kept.
    assert_eq!(m["records"][0], json!([[COL, COL]]));
    assert_eq!(m["records"][3], json!([[COL, null]]));
    // Binary COPY: masked field by field, and one with nothing to mask is as direct.
    let copy = hex(&m["copy_binary"]);
    assert!(copy.starts_with(b"PGCOPY\n\xff\r\n\0"), "{copy:?}");
    for want in [E, C, COL] {
        assert!(
            contains(&copy, want.as_bytes()),
            "{want} missing in the COPY"
        );
    }
    assert_no_originals("binary COPY", &String::from_utf8_lossy(&copy));
    let direct = probe(Driver::Asyncpg, &Target::direct());
    assert_eq!(m["copy_binary_plain"], direct["copy_binary_plain"]);
}

#[test]
fn psycopg_binary_and_text_cursors_read_the_same_masked_values() {
    let m = unmasked_equals_direct(Driver::Psycopg);
    assert_eq!(m["introspection"], "ok");
    for form in ["_bin", "_text"] {
        assert_eq!(m[format!("profiles{form}")], masked_profiles(), "{form}");
        assert_eq!(
            m[format!("card_bigint{form}")],
            json!([[null], [null], [42]])
        );
        assert_eq!(
            m[format!("email_array{form}")],
            json!([[[E, E, E, null, E]]])
        );
        assert_whole_rows_like_star(&m[format!("whole_rows{form}")], &m[format!("star{form}")]);
    }
    // The same value masks the same way in text and in binary.
    for q in [
        "profiles",
        "whole_rows",
        "star",
        "records",
        "email_array",
        "card_bigint",
    ] {
        assert_eq!(m[format!("{q}_bin")], m[format!("{q}_text")], "{q}");
    }
    // Binary COPY decoded by psycopg's binary loaders (enum, text[], composite, int8).
    assert_eq!(
        m["copy_binary"],
        json!([
            [1, "gold", ["vip", E, C], ["1 Main St", E, COL], null],
            [
                2,
                "silver",
                [E, "say \"hi\", {ok}"],
                ["2 Side Rd", null, COL],
                null
            ],
            [3, "bronze", [], null, 42]
        ])
    );
}

#[test]
fn node_postgres_reads_masked_values_by_both_protocols() {
    let m = unmasked_equals_direct(Driver::NodePg);
    for mode in ["_simple", "_extended"] {
        let p = &m[format!("profiles{mode}")];
        assert_eq!(p[0][1], "gold");
        assert!(p[0][2].is_null(), "a covered enum is NULL: {p}");
        assert_eq!(p[0][3], json!(["vip", E, C]));
        assert_eq!(
            p[0][4],
            format!("(\"1 Main St\",\"{E}\",\"{COL}\")"),
            "a composite in text keeps its shape"
        );
        assert!(p[0][5].is_null() && p[0][6].is_null(), "{p}");
        assert_eq!(p[2][5], "42");
        assert_eq!(
            m[format!("email_array{mode}")],
            json!([[[E, E, E, null, E]]])
        );
        assert_eq!(
            m[format!("card_bigint{mode}")],
            json!([[null], [null], ["42"]])
        );
        // A whole row in text: fields masked as their columns, quoting kept.
        let row = m[format!("whole_rows{mode}")][0][0]
            .as_str()
            .unwrap()
            .to_string();
        let head = format!("(1,\"Ada Lovelace\",\"{E}\",\"{C}\",\"{COL}\",");
        assert!(row.starts_with(&head), "{row}");
        assert!(row.ends_with(",1520.75,2023-05-01)"), "{row}");
    }
    for q in [
        "profiles",
        "whole_rows",
        "records",
        "email_array",
        "card_bigint",
        "text_columns",
    ] {
        assert_eq!(m[format!("{q}_simple")], m[format!("{q}_extended")], "{q}");
    }
    // `binary: true`: text-typed results in binary format are masked as in text format.
    assert_eq!(
        m["text_columns_binary_formats"],
        json!(["binary", "binary", "binary", "binary"])
    );
    assert_eq!(m["text_columns_binary"], m["text_columns_extended"]);
    assert_eq!(m["text_columns_binary"][0][0], "Ada Lovelace");
    assert_eq!(m["text_columns_binary"][0][1], E);
    assert_eq!(m["text_columns_binary"][0][2], COL);
}

#[test]
fn jdbc_server_prepared_binary_results_are_masked() {
    let m = unmasked_equals_direct(Driver::Jdbc);
    // text[] and int8 come back in binary (prepareThreshold=-1), composites in text.
    let p = &m["profiles"];
    assert_eq!(
        p[0],
        json!([
            1,
            "gold",
            null,
            ["vip", E, C],
            format!("(\"1 Main St\",\"{E}\",\"{COL}\")"),
            null,
            null,
            [1, 2]
        ])
    );
    assert_eq!(p[2], json!([3, "bronze", null, [], null, 42, null, null]));
    assert_eq!(m["email_array"], json!([[[E, E, E, null, E]]]));
    assert_eq!(m["card_bigint"], json!([[null], [null], [42]]));
    assert_eq!(
        m["star"][0],
        json!([1, "Ada Lovelace", E, C, COL, "1520.75"])
    );
    assert_eq!(
        m["star"][3],
        json!([4, "Walk-in customer", null, null, null, "12.00"])
    );
}

#[test]
fn psql_binary_copy_is_masked_and_unreadable_types_are_refused() {
    let gw = gateway();
    let token = gw.token("analyst", &["ci"]);
    let out = gw
        .psql_command(&token, "orders")
        .args(["-c", "COPY customers_pii TO STDOUT (FORMAT binary)"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.starts_with(b"PGCOPY\n\xff\r\n\0"));
    assert!(contains(&out.stdout, COL.as_bytes()));
    assert_no_originals("binary COPY", &String::from_utf8_lossy(&out.stdout));
    // A column whose binary form the gateway can't read (tsvector): that COPY alone is
    // refused, the session goes on.
    let out = gw
        .psql_command(&token, "orders")
        .args([
            "-c",
            "COPY (SELECT to_tsvector('simple', notes) FROM customers_pii) TO STDOUT (FORMAT binary)",
            "-c",
            "SELECT 'still connected'",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("binary COPY is refused"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("still connected"));
    assert_no_originals("refused COPY", &String::from_utf8_lossy(&out.stdout));
}

fn hex(v: &Value) -> Vec<u8> {
    let s = v.as_str().unwrap_or_else(|| panic!("hex: {v}"));
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
