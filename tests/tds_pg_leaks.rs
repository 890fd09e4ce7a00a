//! Ways a protected value was tried out of the masking SQL Server gateway with python-tds,
//! each a test, on rows the test PostgreSQL really holds: aliases, CAST/CONVERT, CONCAT,
//! derived tables, FOR JSON and FOR XML output, error text.
//!
//! The target is `tds-testserver` (a stand-in for SQL Server that runs each batch on
//! PostgreSQL). The gateway classifies every batch as T-SQL; the test server rewrites the few
//! T-SQL forms used here that PostgreSQL spells otherwise (CONVERT, FOR JSON, FOR XML, LEN),
//! see `tds_testserver::tsql`. String concatenation with `+` is not rewritten (PostgreSQL
//! refuses it), and PostgreSQL-only syntax does not parse as T-SQL: for both, what is shown is
//! that nothing protected comes back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::Scratch;
use support::tds::{TdsGw, text};
use support::tds_pg::{PgTds, fixture_sql, gateway, tls_dir};

/// Column rule on `people.ssn`; e-mails and card numbers by detector.
const MASKING: &str = r#"
[[masking]]
connections = ["sales"]
detectors = ["card", "email"]
columns = ["people.ssn"]
unmasked_groups = ["dpo"]
"#;

struct Leaks {
    _dir: Scratch,
    server: PgTds,
    gw: TdsGw,
}

fn start(name: &str) -> Leaks {
    let dir = Scratch::new(name);
    let tls = tls_dir(&dir.0);
    let server = PgTds::start(Some(&tls));
    let gw = gateway(&server, &tls, "mandatory", MASKING);
    Leaks {
        _dir: dir,
        server,
        gw,
    }
}

/// What one statement returned: its rows (each value as Python's `repr`, `|`-joined), or
/// the error the driver raised (`ERROR <number> <message>`).
fn run(l: &Leaks, groups: &[&str], statements: &[&str]) -> Vec<String> {
    let token = l.gw.gw.token("analyst", groups);
    let list = serde_json::to_string(statements).unwrap();
    let script = format!(
        r#"
import json
conn = pytds.connect(server="localhost", port=PORT, database="sales", cafile=CA,
                     access_token_callable=lambda: {token:?}, autocommit=True)
for sql in json.loads({list:?}):
    print("==")
    cur = conn.cursor()
    try:
        cur.execute(sql)
        for row in cur.fetchall():
            print("|".join(v if isinstance(v, str) else repr(v) for v in row))
    except pytds.tds_base.Error as e:
        print("ERROR", getattr(e, "msg_no", None), e)
print("==")
print("DONE")
"#
    );
    let out = l.gw.python(&script);
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("DONE"),
        "{t}\n{}",
        l.gw.gw.log_text()
    );
    let mut parts: Vec<String> = t
        .split("==\n")
        .skip(1)
        .map(|s| s.trim_end().to_string())
        .collect();
    parts.pop();
    assert_eq!(parts.len(), statements.len(), "{t}");
    parts
}

/// Every e-mail, card number and SSN stored in `people`, and the SSNs without dashes.
fn originals() -> Vec<String> {
    let all = fixture_sql("SELECT string_agg(concat_ws('|', email, card, ssn), '|') FROM people");
    let mut v: Vec<String> = all
        .split('|')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let ssns = fixture_sql("SELECT string_agg(replace(ssn, '-', ''), '|') FROM people");
    v.extend(ssns.split('|').filter(|s| !s.is_empty()).map(String::from));
    v
}

fn assert_no_originals(sql: &str, out: &str) {
    for o in originals() {
        assert!(!out.contains(&o), "{sql}: {o} leaked in\n{out}");
    }
}

/// Run each statement masked and check that nothing stored came back; the outputs.
fn attempt(l: &Leaks, statements: &[&str]) -> Vec<String> {
    let outs = run(l, &["ci"], statements);
    for (sql, out) in statements.iter().zip(&outs) {
        assert_no_originals(sql, out);
    }
    outs
}

#[test]
fn leak_alias_keeps_the_origin_column_rule() {
    let l = start("tdsleak-alias");
    let out = attempt(
        &l,
        &[
            "SELECT ssn AS x, email AS y, name FROM people WHERE id = 1",
            "SELECT p.ssn AS name, p.name AS ssn_owner FROM people AS p WHERE p.id = 2",
            "SELECT ssn AS \"plain words\" FROM people ORDER BY id",
        ],
    );
    assert_eq!(out[0], "[REDACTED:column]|[REDACTED:email]|Ada Lovelace");
    assert_eq!(out[1], "[REDACTED:column]|Alan Turing");
    // Grace Hopper's NULL stays NULL.
    assert_eq!(out[2], "[REDACTED:column]\n[REDACTED:column]\nNone");
    // The dpo group reads the same statement in clear.
    let clear = run(
        &l,
        &["ci", "dpo"],
        &["SELECT ssn AS x FROM people WHERE id = 1"],
    );
    assert_eq!(clear[0], "078-05-1120");
}

#[test]
fn leak_cast_and_convert() {
    let l = start("tdsleak-cast");
    let out = attempt(
        &l,
        &[
            "SELECT CAST(ssn AS varchar(40)), CONVERT(nvarchar(40), ssn), \
             CONVERT(varchar(max), email), CAST(card AS nvarchar(40)) FROM people WHERE id = 1",
            "SELECT CONVERT(nvarchar(20), REPLACE(ssn, '-', '')) AS digits FROM people WHERE id = 1",
            // SQL Server's error 245 quotes the value that did not convert.
            "SELECT name FROM people WHERE CAST(ssn AS int) = 1",
            // A computed integer over the protected column cannot be rewritten: withheld.
            "SELECT CONVERT(bigint, REPLACE(ssn, '-', '')) AS n FROM people WHERE id = 1",
        ],
    );
    assert_eq!(
        out[0],
        "[REDACTED:column]|[REDACTED:column]|[REDACTED:email]|[REDACTED:card]"
    );
    assert_eq!(out[1], "[REDACTED:column]");
    assert!(
        out[2].starts_with("ERROR 245")
            && out[2].contains("converting the varchar value '[REDACTED:column]'"),
        "{}",
        out[2]
    );
    assert!(
        out[3].starts_with("ERROR") && out[3].contains("withheld"),
        "{}",
        out[3]
    );
    // The test server ran what the gateway let through, as PostgreSQL spells it.
    let requests = l.server.handle.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.contains("CAST(ssn AS varchar(40))") && !r.contains("CONVERT")),
        "{requests:?}"
    );
}

#[test]
fn leak_concat() {
    let l = start("tdsleak-concat");
    let out = attempt(
        &l,
        &[
            "SELECT CONCAT(name, ' ', ssn) FROM people ORDER BY id",
            "SELECT CONCAT(name, ' <', email, '> ', card) FROM people WHERE id = 1",
            "SELECT CONCAT_WS(',', id, ssn, name) AS csv FROM people WHERE id = 2",
            // T-SQL's `+` on strings is not rewritten; PostgreSQL refuses it.
            "SELECT name + ' ' + ssn FROM people",
        ],
    );
    assert_eq!(out[0].lines().count(), 3, "{}", out[0]);
    assert!(
        out[0].lines().all(|l| l == "[REDACTED:column]"),
        "{}",
        out[0]
    );
    assert_eq!(out[1], "Ada Lovelace <[REDACTED:email]> [REDACTED:card]");
    assert_eq!(out[2], "[REDACTED:column]");
    assert!(out[3].starts_with("ERROR"), "{}", out[3]);
}

#[test]
fn leak_derived_tables_ctes_and_unions_mask_every_column() {
    let l = start("tdsleak-derived");
    let out = attempt(
        &l,
        &[
            "SELECT x FROM (SELECT ssn AS x FROM people) AS t ORDER BY x",
            "WITH t AS (SELECT name, ssn AS x FROM people) SELECT name, x FROM t WHERE x IS NOT NULL",
            "SELECT name FROM people UNION ALL SELECT ssn FROM people",
        ],
    );
    // Outputs are followed through derived tables, CTEs and UNIONs: a column that is the
    // protected one renamed, or may be it (either side of a UNION), is masked whole; a column
    // that is only `name` passes.
    assert!(
        out[0].lines().take(2).all(|l| l == "[REDACTED:column]"),
        "{}",
        out[0]
    );
    assert!(
        out[1].lines().all(|l| l.ends_with("|[REDACTED:column]")),
        "{}",
        out[1]
    );
    assert!(out[1].contains("Ada Lovelace|"), "{}", out[1]);
    assert!(!out[2].contains("Alan Turing"), "{}", out[2]);
}

#[test]
fn leak_for_json_and_for_xml() {
    let l = start("tdsleak-forjson");
    let statements = [
        "SELECT name, ssn FROM people ORDER BY id FOR JSON PATH",
        "SELECT name, email, card FROM people ORDER BY id FOR JSON PATH",
        "SELECT name, ssn FROM people ORDER BY id FOR XML PATH",
        "SELECT name, email FROM people ORDER BY id FOR XML RAW",
        // `*` names no column: a document over `*` reading a covered table is masked whole.
        "SELECT * FROM people ORDER BY id FOR JSON AUTO",
    ];
    let out = attempt(&l, &statements);
    // Naming the protected column: the whole document is masked.
    assert_eq!(out[0], "[REDACTED:column]");
    assert_eq!(out[2], "[REDACTED:column]");
    assert_eq!(out[4], "[REDACTED:column]");
    // Detectors inside the document: the rest of it is readable.
    let doc: serde_json::Value = serde_json::from_str(&out[1]).expect("still JSON");
    assert_eq!(doc[0]["name"], "Ada Lovelace");
    assert_eq!(doc[0]["email"], "[REDACTED:email]");
    assert_eq!(doc[1]["card"], "[REDACTED:card]");
    assert!(
        out[3].contains("Ada Lovelace") && out[3].contains("[REDACTED:email]"),
        "{}",
        out[3]
    );
    // An exempt group reads what the test server sent.
    let clear = run(&l, &["ci", "dpo"], &statements[..1]);
    assert!(
        clear[0].contains("078-05-1120") && clear[0].contains("\"name\""),
        "{}",
        clear[0]
    );
}

/// `FOR XML` over `*` names no covered column, and XML has no field rules as JSON has (the
/// detectors find e-mails and cards but not an SSN): a document over `*` that reads a covered
/// table is masked whole.
#[test]
fn leak_for_xml_over_a_wildcard() {
    let l = start("tdsleak-forxml-star");
    let out = attempt(
        &l,
        &[
            "SELECT p.* FROM people AS p FOR XML PATH('person')",
            "SELECT * FROM people FOR XML RAW",
        ],
    );
    assert_eq!(out, ["[REDACTED:column]", "[REDACTED:column]"]);
}

/// PostgreSQL's `::` cast is read by the gateway's T-SQL parser as a cast, so the same
/// lineage masks it; a batch the gateway cannot parse is `sql.unknown`, which the policy
/// does not permit: refused before the target sees it (fail closed).
#[test]
fn pg_spellings_are_masked_and_unparseable_batches_refused() {
    let l = start("tdsleak-pgsyntax");
    let out = attempt(&l, &["SELECT ssn::text FROM people ORDER BY id"]);
    assert_eq!(out[0], "[REDACTED:column]\n[REDACTED:column]\nNone");
    let before = l.server.handle.request_count();
    let out = attempt(&l, &["SELECT ssn FROM people WHERE ((id = 1)"]);
    assert!(
        out[0].starts_with("ERROR 229") && out[0].contains("portcullis"),
        "{}",
        out[0]
    );
    assert_eq!(
        l.server.handle.request_count(),
        before,
        "the target saw a refused batch"
    );
}
