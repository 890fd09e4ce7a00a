//! Result masking through the SQL Server gateway, end to end: real clients (`python-tds`,
//! FreeTDS `tsql`) read rows the target sent in clear and get them masked by the session's
//! column rules and detectors; an exempt group reads them in clear; what cannot be masked is
//! withheld with an error; every answer's rows, error and masked counts are on record.
//!
//! The target is Microsoft's `mssql-mock-tds` (see `support::tds`): it answers scripted
//! result sets, so each batch below is registered with the rows a real server would send for
//! it. What is tested is the gateway's handling of those rows on the wire.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use mssql_mock_tds::{
    ColumnDefinition, ColumnValue, QueryResponse, Row, SqlDataType, TerminalError,
};
use support::Scratch;
use support::tds::{CUSTOMERS_QUERY, Mock, MockTls, TdsGw, start, text, tls_files};

const MASKING: &str = r#"
[[masking]]
connections = ["sales"]
detectors = ["card", "email"]
columns = ["customers.card", "*.ssn"]
unmasked_groups = ["dpo"]
"#;

const COMPUTED: &str =
    "SELECT id, upper(name) AS n, translate(card, '0123456789', 'abcdefghij') AS c FROM customers";
const RENAMED: &str = "SELECT ssn AS x, name FROM customers";
const NOTES: &str = "SELECT notes FROM customers";
const CAST_ERROR: &str = "SELECT CAST(card AS int) FROM customers";
const NUMERIC_SSN: &str = "SELECT id, ssn FROM people";
const BIG: &str = "SELECT name, email FROM big";
/// The mock writes a whole answer as one packet of at most 32 KiB, so a few hundred rows; the
/// gateway cuts the masked answer into packets of the session's size (4 KiB).
const BIG_ROWS: usize = 300;

fn nvarchar(s: &str) -> ColumnValue {
    ColumnValue::NVarChar(s.into())
}

fn utf16_chunks(parts: &[&str]) -> ColumnValue {
    ColumnValue::NVarCharMax(parts.iter().map(|p| p.encode_utf16().collect()).collect())
}

/// The batches of this file, with what a server would answer.
fn register(mock: &Mock) {
    use SqlDataType::{BigInt, Int, NVarChar, NVarCharMax};
    let col = ColumnDefinition::new;
    mock.register(
        COMPUTED,
        QueryResponse::new(
            vec![col("id", Int), col("n", NVarChar), col("c", NVarChar)],
            vec![Row::new(vec![
                ColumnValue::Int(1),
                nvarchar("ADA LOVELACE"),
                nvarchar("ebbb bbbb bbbb bbbb"),
            ])],
        ),
    );
    mock.register(
        RENAMED,
        QueryResponse::new(
            vec![col("x", NVarChar), col("name", NVarChar)],
            vec![Row::new(vec![
                nvarchar("078-05-1120"),
                nvarchar("Ada Lovelace"),
            ])],
        ),
    );
    // An e-mail split across PLP chunks, as a server may cut a MAX value.
    mock.register(
        NOTES,
        QueryResponse::new(
            vec![col("notes", NVarCharMax)],
            vec![Row::new(vec![utf16_chunks(&[
                "call back; write to ada@exa",
                "mple.com after six",
            ])])],
        ),
    );
    mock.register(
        CAST_ERROR,
        QueryResponse::error_only(TerminalError::new(
            245,
            16,
            "Conversion failed when converting the nvarchar value 'ebbb bbbb bbbb bbbb' to data type int.",
        )),
    );
    mock.register(
        NUMERIC_SSN,
        QueryResponse::new(
            vec![col("id", Int), col("ssn", BigInt)],
            vec![Row::new(vec![
                ColumnValue::Int(1),
                ColumnValue::BigInt(78_051_120),
            ])],
        ),
    );
    let rows = (0..BIG_ROWS)
        .map(|i| {
            Row::new(vec![
                nvarchar(&format!("customer {i}")),
                nvarchar(&format!("person{i}@example.com")),
            ])
        })
        .collect();
    mock.register(
        BIG,
        QueryResponse::new(vec![col("name", NVarChar), col("email", NVarChar)], rows),
    );
}

/// A python-tds session as `sub` in `groups` that runs each batch and prints its rows (or
/// its error) between markers.
fn read_all(gw: &TdsGw, sub: &str, groups: &[&str], batches: &[&str]) -> String {
    let token = gw.gw.token(sub, groups);
    let script = format!(
        r#"
conn = pytds.connect(server="localhost", port=PORT, database="sales", cafile=CA,
                     access_token_callable=lambda: {token:?}, autocommit=True)
cur = conn.cursor()
for sql in {batches:?}:
    print("==", sql)
    try:
        cur.execute(sql)
        rows = cur.fetchall()
        print("ROWS", len(rows))
        for row in rows[:3]:
            print("|".join(str(v) for v in row))
    except pytds.tds_base.Error as e:
        print("ERROR", e)
print("DONE")
"#
    );
    let out = gw.python(&script);
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("DONE"),
        "{t}\n{}",
        gw.gw.log_text()
    );
    t
}

/// The part of `all` printed for `sql`.
fn section<'a>(all: &'a str, sql: &str) -> &'a str {
    let start = all.find(&format!("== {sql}\n")).expect("section");
    let rest = &all[start + 3 + sql.len()..];
    &rest[..rest
        .find("\n==")
        .or_else(|| rest.find("\nDONE"))
        .unwrap_or(rest.len())]
}

#[test]
fn rows_are_masked_by_rule_lineage_and_detector_and_exempt_groups_read_them_in_clear() {
    let dir = Scratch::new("tds-mask");
    let tls = tls_files(&dir.0);
    let mock = Mock::start(MockTls::Prelogin, &tls);
    register(&mock);
    let gw = start(&mock, &tls, "mandatory", MASKING);
    let batches = [
        CUSTOMERS_QUERY,
        COMPUTED,
        RENAMED,
        NOTES,
        CAST_ERROR,
        NUMERIC_SSN,
        BIG,
    ];
    let masked = read_all(&gw, "pipeline-3", &["ci"], &batches);

    // A column rule masks the card column whole; the detector masks the e-mail; the rest
    // is as the target sent it.
    let s = section(&masked, CUSTOMERS_QUERY);
    assert!(s.contains("ROWS 2") && s.contains("|Ada Lovelace|"), "{s}");
    for clear in [
        "4111 1111 1111 1111",
        "5500-0000-0000-0004",
        "ada@example.com",
    ] {
        assert!(!s.contains(clear), "{clear} leaked: {s}");
    }
    // Computed from the card column: masked whole, though no detector would see it; an
    // expression over an unprotected column passes.
    let s = section(&masked, COMPUTED);
    assert!(s.contains("|ADA LOVELACE|") && !s.contains("ebbb"), "{s}");
    // Renamed: still the protected column.
    let s = section(&masked, RENAMED);
    assert!(
        !s.contains("078-05-1120") && s.contains("Ada Lovelace"),
        "{s}"
    );
    // A MAX value whose e-mail is cut across chunks is masked as one value.
    let s = section(&masked, NOTES);
    assert!(s.contains("call back") && !s.contains("ada@exa"), "{s}");
    assert!(!s.contains("mple.com"), "{s}");
    // The target's error quotes a derived value: the quote is masked, the error kept.
    let s = section(&masked, CAST_ERROR);
    assert!(
        s.contains("ERROR") && s.contains("Conversion failed"),
        "{s}"
    );
    assert!(!s.contains("ebbb"), "{s}");
    // A rule on a column the gateway cannot rewrite (an integer): withheld, with the reason.
    let s = section(&masked, NUMERIC_SSN);
    assert!(s.contains("ERROR") && s.contains("withheld"), "{s}");
    assert!(!s.contains("78051120"), "{s}");
    // Hundreds of rows, masked into many packets: every e-mail masked, every row there.
    let s = section(&masked, BIG);
    assert!(s.contains(&format!("ROWS {BIG_ROWS}")), "{s}");
    assert!(
        s.contains("customer 0|") && !s.contains("@example.com"),
        "{s}"
    );

    // The session goes on after all of that, and an exempt group reads the same in clear.
    let clear = read_all(
        &gw,
        "dpo-1",
        &["ci", "dpo"],
        &[CUSTOMERS_QUERY, COMPUTED, BIG],
    );
    assert!(
        section(&clear, CUSTOMERS_QUERY).contains("4111 1111 1111 1111"),
        "{clear}"
    );
    assert!(section(&clear, COMPUTED).contains("ebbb"), "{clear}");
    assert!(
        section(&clear, BIG).contains("person2@example.com"),
        "{clear}"
    );

    // On record: rows, errors and what masking did, per answer.
    let ends: Vec<_> = gw
        .gw
        .audit(&["--kind", "command_end"])
        .into_iter()
        .filter(|e| e["kind"] == "command_end")
        .collect();
    let big: Vec<_> = ends
        .iter()
        .filter(|e| e["rows"] == BIG_ROWS as u64)
        .collect();
    assert_eq!(big.len(), 2, "{ends:#?}");
    let masked_big = big
        .iter()
        .find(|e| e["detail"]["masked"].is_object())
        .expect("masked counts on the masked session's answer");
    assert_eq!(
        masked_big["detail"]["masked"]["email"], BIG_ROWS as u64,
        "{masked_big}"
    );
    assert!(
        ends.iter().any(|e| e["error"]
            .as_str()
            .is_some_and(|m| m.contains("error 245") && !m.contains("ebbb"))),
        "{ends:#?}"
    );
}

/// Prepared by python-tds with `sp_prepexec`, then run by its handle. It renames the
/// protected `ssn` column, so only the statement's lineage says to mask `x` (no detector
/// would). Upper case and distinct from the other statements, as the mock matches RPCs by
/// contained text (see `Mock::register_with_handle`).
const PREPARED_RENAMED: &str = "SELECT NAME, SSN AS X FROM CUSTOMERS WHERE NAME = @N";
/// The parameter value the execute sends, by which the mock picks its answer.
const BY_HANDLE: &str = "RUN-BY-HANDLE";

/// A python-tds session as `sub` in `groups` that prepares `PREPARED_RENAMED` and runs it by
/// handle, printing each answer's rows between markers.
fn prepare_and_execute(gw: &TdsGw, sub: &str, groups: &[&str]) -> String {
    let token = gw.gw.token(sub, groups);
    let script = format!(
        r#"
from pytds import tds_base
conn = pytds.connect(server="localhost", port=PORT, database="sales", cafile=CA,
                     access_token_callable=lambda: {token:?}, autocommit=True)
cur = conn.cursor()
PREPEXEC = tds_base.InternalProc(tds_base.TDS_SP_PREPEXEC, "sp_prepexec")
def show(label, proc, params):
    print("==", label)
    try:
        cur.callproc(proc, params)
        rows = cur.fetchall()
        outs = cur.get_proc_outputs()
        print("ROWS", len(rows), "OUTPUTS", outs)
        for row in rows:
            print("|".join(str(v) for v in row))
        return outs
    except pytds.tds_base.Error as e:
        print("ERROR", e)
        return [None]
out = tds_base.output(value=None, param_type=int)
h = show("PREPEXEC", PREPEXEC, (out, "@N nvarchar(40)", {PREPARED_RENAMED:?}, "Ada"))[0]
show("EXECUTE", tds_base.SP_EXECUTE, (h, {BY_HANDLE:?}))
print("DONE")
"#
    );
    let out = gw.python(&script);
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("DONE"),
        "{t}\n{}",
        gw.gw.log_text()
    );
    t
}

#[test]
fn an_execute_by_handle_is_masked_as_the_statement_it_was_prepared_with() {
    let dir = Scratch::new("tds-mask-prepared");
    let tls = tls_files(&dir.0);
    let mock = Mock::start(MockTls::Prelogin, &tls);
    let rows = || {
        let col = ColumnDefinition::new;
        QueryResponse::new(
            vec![
                col("name", SqlDataType::NVarChar),
                col("x", SqlDataType::NVarChar),
            ],
            vec![Row::new(vec![
                nvarchar("Ada Lovelace"),
                nvarchar("078-05-1120"),
            ])],
        )
    };
    mock.register_with_handle(PREPARED_RENAMED, rows(), 7);
    mock.register(BY_HANDLE, rows());
    let gw = start(&mock, &tls, "mandatory", MASKING);

    let masked = prepare_and_execute(&gw, "pipeline-7", &["ci"]);
    assert!(
        section(&masked, "PREPEXEC").contains("OUTPUTS [7]"),
        "{masked}"
    );
    for label in ["PREPEXEC", "EXECUTE"] {
        let s = section(&masked, label);
        assert!(
            s.contains("ROWS 1") && s.contains("Ada Lovelace|"),
            "{label}: {s}"
        );
        assert!(!s.contains("078-05-1120"), "{label} leaked: {s}");
    }
    // The exempt group reads what the target sent, by handle too.
    let clear = prepare_and_execute(&gw, "dpo-2", &["ci", "dpo"]);
    let s = section(&clear, "EXECUTE");
    assert!(s.contains("Ada Lovelace|078-05-1120"), "{s}");
}

/// FreeTDS `tsql` (a second client, TDS 7.4 over TLS) gets the same masked rows.
#[test]
fn tsql_reads_masked_rows() {
    let dir = Scratch::new("tds-mask-tsql");
    let tls = tls_files(&dir.0);
    let mock = Mock::start(MockTls::Prelogin, &tls);
    let gw = start(&mock, &tls, "mandatory", MASKING);
    let key = gw.access_key("pipeline-4", &["ci"]);
    let t = text(&gw.tsql(&key, CUSTOMERS_QUERY));
    assert!(
        t.contains("Ada Lovelace") && t.contains("Alan Turing"),
        "{t}"
    );
    for clear in ["4111 1111 1111 1111", "ada@example.com", "alan@example.org"] {
        assert!(!t.contains(clear), "{clear} leaked: {t}");
    }
}
