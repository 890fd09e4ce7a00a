//! The SQL Server gateway against a TDS target that answers from the real test PostgreSQL
//! (`tds-testserver`, see `support::tds_pg`), driven by real clients (python-tds, FreeTDS
//! `tsql`) and by a bare TDS client where packets and timing are the point.
//!
//! The target is a stand-in for SQL Server, not SQL Server: it runs PostgreSQL's SQL, so the
//! batches below are PostgreSQL's. What these tests prove is how the gateway (and the test
//! server itself) carry real data in TDS: typed values, thousands of rows over many packets,
//! a value of hundreds of KiB in PLP chunks, a batch over many packets, errors, Attention,
//! and masking of rows PostgreSQL really returned.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use support::Scratch;
use support::tds::{HELD_PASSWORD, HELD_USER, text};
use support::tds_pg::{EVENTS, PgTds, RawClient, fixture_sql, gateway, tls_dir};

const PEOPLE: &str = "SELECT id, name, email, balance, score, active, born, created, seen, ref, \
                      photo, small, big FROM people ORDER BY id";
const MASKED_PEOPLE: &str =
    "SELECT id, name, email, card, ssn, balance, score, born, created FROM people ORDER BY id";
const EVENTS_QUERY: &str = "SELECT id, label, email, amount FROM events ORDER BY id";
const DOCS: &str = "SELECT id, body FROM docs";

/// Python helpers: `run(cur, sql)` prints each row (aware datetimes in ISO form) or the
/// error between markers.
const PY_HELPERS: &str = r#"
import datetime
def show(v):
    if isinstance(v, datetime.datetime) and v.tzinfo is not None:
        return v.isoformat()
    return repr(v)
def run(cur, sql, limit=5):
    print("==", sql[:60])
    try:
        cur.execute(sql)
        rows = cur.fetchall()
        print("ROWS", len(rows))
        for row in rows[:limit]:
            print("ROW", "|".join(show(v) for v in row))
        if len(rows) > limit:
            print("LAST", "|".join(show(v) for v in rows[-1]))
    except pytds.tds_base.Error as e:
        print("ERROR", getattr(e, "msg_no", None), e)
"#;

/// The part of `all` printed for the batch starting `sql`.
fn section<'a>(all: &'a str, sql: &str) -> &'a str {
    let head = format!("== {}\n", &sql[..sql.len().min(60)]);
    let start = all.find(&head).unwrap_or_else(|| panic!("{head} in {all}"));
    let rest = &all[start + head.len()..];
    &rest[..rest.find("\n==").unwrap_or(rest.len())]
}

/// The typed rows of `people`, as python-tds reads them: each type in its Python form
/// (python-tds divides a NUMERIC by 10^scale, so 1234.50 reads as `Decimal('1234.5')`).
fn assert_people(s: &str) {
    assert!(s.contains("ROWS 3"), "{s}");
    for expected in [
        "ROW 1|'Ada Lovelace'|'ada@example.com'|Decimal('1234.5')|0.25|True|\
         datetime.date(1815, 12, 10)|datetime.datetime(2024, 3, 1, 12, 34, 56, 789000)|\
         2024-03-01T15:30:00+05:30|UUID('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')|\
         b'\\x00\\xff\\x10'|7|9000000000",
        "ROW 2|'Alan Turing'|'alan@example.org'|Decimal('-0.01')|-1.5|False|\
         datetime.date(1912, 6, 23)|datetime.datetime(1954, 6, 7, 0, 0)|\
         1954-06-07T15:00:00+05:30|UUID('00000000-0000-0000-0000-000000000001')|b''|-7|-1",
        "ROW 3|'Grace Hopper'|None|None|None|None|None|None|None|None|None|None|None",
    ] {
        assert!(s.contains(expected), "{expected}\nnot in\n{s}");
    }
}

/// python-tds and FreeTDS `tsql` connected straight to the test server (no gateway): typed
/// rows, several result sets in one batch, a PostgreSQL error as an ERROR token the session
/// survives; the logins it took are on record as sent.
#[test]
fn clients_read_real_rows_straight_from_the_test_server() {
    let dir = Scratch::new("tdspg-direct");
    let tls = tls_dir(&dir.0);
    let server = PgTds::start(Some(&tls));
    let ca = tls.join("ca.crt");
    let script = format!(
        r#"{PY_HELPERS}
conn = pytds.connect(server="localhost", port=PORT, database="tds_pg", user="direct-user",
                     password="direct-pass", cafile=CA, autocommit=True)
cur = conn.cursor()
run(cur, {PEOPLE:?})
run(cur, "SELECT 1/0 AS boom")
cur.execute("SELECT 1 AS a; SELECT 'two' AS b, 2.5::float8 AS c")
print("SET1", cur.fetchall())
print("NEXT", cur.nextset())
print("SET2", cur.fetchall())
conn.autocommit = False
cur = conn.cursor()
cur.execute("INSERT INTO events (id, label) VALUES (-1, 'rolled back')")
conn.rollback()
run(cur, "SELECT count(*) FROM events WHERE id = -1")
print("DONE")
"#
    );
    let out = server.python(Some(&ca), &script);
    let t = text(&out);
    assert!(out.status.success() && t.contains("DONE"), "{t}");
    assert_people(section(&t, PEOPLE));
    let e = section(&t, "SELECT 1/0 AS boom");
    assert!(
        e.contains("ERROR 50000") && e.contains("division by zero"),
        "{e}"
    );
    assert!(t.contains("SET1 [(1,)]") && t.contains("NEXT True"), "{t}");
    assert!(t.contains("SET2 [('two', 2.5)]"), "{t}");
    // Driver transactions (transaction-manager requests) run on PostgreSQL.
    assert!(
        section(&t, "SELECT count(*) FROM events WHERE id = -1").contains("ROW 0"),
        "{t}"
    );

    let out = server.tsql(&dir.0, "SELECT name, balance FROM people ORDER BY id");
    let t = text(&out);
    for expected in [
        "Ada Lovelace",
        "1234.50",
        "Alan Turing",
        "-0.01",
        "Grace Hopper",
    ] {
        assert!(t.contains(expected), "{expected} not in {t}");
    }

    let logins = server.handle.logins();
    let python = logins
        .iter()
        .find(|l| l.user == "direct-user")
        .expect("python login");
    assert_eq!(python.password, "direct-pass");
    assert_eq!(python.database, "tds_pg");
    assert!(python.encrypted, "python-tds with a CA logs in over TLS");
    let tsql = logins
        .iter()
        .find(|l| l.user == "someone")
        .expect("tsql login");
    assert_eq!(tsql.password, "anything");
    assert!(!tsql.encrypted);
}

/// A bare client sees what drivers hide: every packet of the answer within the packet size it
/// asked for, rows arriving before PostgreSQL has finished the query, a batch of 100 KB in
/// 512-byte packets, and an Attention that cancels a running query on PostgreSQL.
#[test]
fn answers_stream_in_negotiated_packets_and_attention_cancels_on_postgres() {
    let server = PgTds::start(None);
    server.block_on(async {
        let mut c = RawClient::connect(server.addr, 512).await;

        let a = c
            .run("SELECT g, repeat('x', g % 50) FROM generate_series(1, 20000) AS g")
            .await;
        assert_eq!(a.rows, 20_000);
        assert!(a.packets.len() > 1000, "{} packets", a.packets.len());
        assert!(
            a.packets.iter().all(|&p| p <= 512),
            "{:?}",
            a.packets.iter().max()
        );
        let last = a.dones.last().expect("DONE");
        assert_eq!((last.status & 0x10, last.row_count), (0x10, 20_000));

        // The last row sleeps two seconds: the others are on the wire before it.
        let a = c
            .run(
                "SELECT g, CASE WHEN g = 20000 THEN pg_sleep(2) END \
                 FROM generate_series(1, 20000) AS g",
            )
            .await;
        assert_eq!(a.rows, 20_000);
        assert!(
            a.first_packet < Duration::from_millis(1500),
            "first packet after {:?}",
            a.first_packet
        );

        // A 100 KB batch, sent in 512-byte packets, arrives whole.
        let literal = "y".repeat(100_000);
        let a = c.run(&format!("SELECT length('{literal}') AS n")).await;
        assert_eq!(a.first_column.len(), 1);
        let v = &a.first_column[0];
        assert_eq!(v[0], 4, "INTN(4)");
        assert_eq!(i32::from_le_bytes([v[1], v[2], v[3], v[4]]), 100_000);

        // Attention: the query is cancelled on PostgreSQL, the answer ends with DONE_ATTN.
        let sent = Instant::now();
        c.send_batch("SELECT pg_sleep(30)").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.attention().await;
        let a = c.read_answer(sent).await;
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "{:?}",
            sent.elapsed()
        );
        assert!(a.dones.iter().any(|d| d.status & 0x20 != 0), "DONE_ATTN");
        let running = fixture_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
             AND query LIKE 'SELECT pg_sleep(30)%'",
        );
        assert_eq!(running, "0");

        // A PostgreSQL error: ERROR 50000 and DONE_ERROR; the connection goes on.
        let a = c.run("SELECT * FROM no_such_table").await;
        assert!(a.errors[0].contains("no_such_table"), "{:?}", a.errors);
        assert!(a.dones.last().is_some_and(|d| d.status & 0x02 != 0));
        let a = c.run("SELECT 41 + 1").await;
        assert_eq!(a.first_column, [vec![4, 42, 0, 0, 0]]);
    });
}

/// python-tds through the gateway to the test server (TLS on both legs): typed rows,
/// thousands of rows over many packets, a 240 KB value, a 100 KB batch, `sp_executesql`
/// parameters, a PostgreSQL error the session survives, a query cancelled by the driver's
/// timeout; the target saw the gateway's held login; the audit counts the rows.
#[test]
fn python_tds_through_the_gateway_reads_real_data() {
    let dir = Scratch::new("tdspg-gw");
    let tls = tls_dir(&dir.0);
    let server = PgTds::start(Some(&tls));
    let gw = gateway(&server, &tls, "mandatory", "");
    let token = gw.gw.token("pipeline-1", &["ci"]);
    let literal = "z".repeat(100_000);
    // LEN is T-SQL (length() is not, and policy refuses calls it does not know).
    let big_batch = format!("SELECT LEN('{literal}') AS n, 'tail' AS t");
    let script = format!(
        r#"{PY_HELPERS}
conn = pytds.connect(server="localhost", port=PORT, database="sales", cafile=CA,
                     access_token_callable=lambda: {token:?}, autocommit=True)
cur = conn.cursor()
run(cur, {PEOPLE:?})
run(cur, {EVENTS_QUERY:?}, limit=2)
cur.execute({DOCS:?})
body = cur.fetchall()[0][1]
print("DOC", len(body), body[-24:])
run(cur, {big_batch:?})
run(cur, "SELECT nope FROM people")
print("==", "params")
cur.execute("SELECT name, %s AS tag FROM people WHERE id = %s", ("t-1", 2))
print("PARAMS", cur.fetchall())
slow = pytds.connect(server="localhost", port=PORT, database="sales", cafile=CA,
                     access_token_callable=lambda: {token:?}, autocommit=True, timeout=2)
sc = slow.cursor()
import time
t0 = time.time()
try:
    sc.execute("SELECT pg_sleep(30)")
    print("NOT CANCELLED")
except Exception as e:
    print("TIMEOUT", type(e).__name__)
sc.execute("SELECT 42 AS answer")
print("AFTER", sc.fetchall(), round(time.time() - t0))
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
    assert_people(section(&t, PEOPLE));
    let s = section(&t, EVENTS_QUERY);
    assert!(s.contains(&format!("ROWS {EVENTS}")), "{s}");
    // `amount` is a numeric without a typmod: PostgreSQL's text, as NVARCHAR(MAX).
    assert!(
        s.contains("ROW 1|'event 1'|'user1@example.com'|'0.70000000000000000000'")
            && s.contains(&format!("LAST {EVENTS}|'event {EVENTS}'")),
        "{s}"
    );
    let len = fixture_sql("SELECT length(body) FROM docs");
    assert!(
        t.contains(&format!("DOC {len} write to ada@example.com")),
        "{t}"
    );
    assert!(section(&t, &big_batch).contains("ROW 100000|'tail'"), "{t}");
    let e = section(&t, "SELECT nope FROM people");
    assert!(
        e.contains("ERROR 50000") && e.contains("column \"nope\" does not exist"),
        "{e}"
    );
    assert!(t.contains("PARAMS [('Alan Turing', 't-1')]"), "{t}");
    assert!(t.contains("TIMEOUT") && !t.contains("NOT CANCELLED"), "{t}");
    let after = t.lines().find(|l| l.starts_with("AFTER")).expect("AFTER");
    assert!(after.starts_with("AFTER [(42,)]"), "{after}");
    let secs: u64 = after.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        secs < 15,
        "the cancelled query did not hold the session: {after}"
    );

    // The target saw the gateway's held SQL login, never the caller's token.
    let logins = server.handle.logins();
    assert!(logins.len() >= 2, "{logins:?}");
    for l in &logins {
        assert_eq!(
            (l.user.as_str(), l.password.as_str(), l.database.as_str()),
            (HELD_USER, HELD_PASSWORD, "sales")
        );
        assert!(l.token.is_none() && l.encrypted, "{l:?}");
    }
    // The parameters reached PostgreSQL as $n.
    assert!(
        server
            .handle
            .requests()
            .iter()
            .any(|r| r.contains("WHERE id = $2")),
        "{:?}",
        server.handle.requests()
    );

    // The audit's command_end rows are the rows PostgreSQL returned.
    let ends = gw.gw.audit(&["--kind", "command_end"]);
    assert!(ends.iter().any(|e| e["rows"] == EVENTS as u64), "{ends:#?}");
    assert!(ends.iter().any(|e| e["rows"] == 3), "{ends:#?}");
    assert!(
        ends.iter().any(|e| e["error"]
            .as_str()
            .is_some_and(|m| m.contains("does not exist"))),
        "{ends:#?}"
    );
}

/// FreeTDS `tsql` through the gateway, the target leg in clear (loopback): rows and a
/// PostgreSQL error as the client prints them.
#[test]
fn tsql_through_the_gateway_reads_real_rows_and_errors() {
    let dir = Scratch::new("tdspg-tsql");
    let tls = tls_dir(&dir.0);
    let server = PgTds::start(None);
    let gw = gateway(&server, &tls, "off", "");
    let key = gw.access_key("pipeline-2", &["ci"]);
    let t = text(&gw.tsql(&key, "SELECT id, name, email FROM people ORDER BY id"));
    for expected in ["Ada Lovelace", "alan@example.org", "Grace Hopper"] {
        assert!(t.contains(expected), "{expected} not in {t}");
    }
    let t = text(&gw.tsql(&key, "SELECT missing_column FROM people"));
    assert!(
        t.contains("missing_column") && t.contains("does not exist"),
        "{t}"
    );
    assert!(server.handle.logins().iter().all(|l| !l.encrypted));
}

const MASKING: &str = r#"
[[masking]]
connections = ["sales"]
detectors = ["card", "email"]
columns = ["people.ssn"]
unmasked_groups = ["dpo"]
"#;

/// Masking on rows PostgreSQL really returned: the rule's column and every e-mail and card
/// number are masked (in 5000 rows over many packets, and at the end of a 240 KB value),
/// NULLs stay NULL, names, numbers and dates are as stored, a 100 KB batch reading the
/// protected column is masked too; FreeTDS `tsql` reads the same masked; an exempt group
/// reads them in clear; the audit counts rows and masked values.
#[test]
fn masking_applies_to_real_rows() {
    let dir = Scratch::new("tdspg-mask");
    let tls = tls_dir(&dir.0);
    let server = PgTds::start(Some(&tls));
    let gw = gateway(&server, &tls, "mandatory", MASKING);
    // LEN is T-SQL: the test server runs it as PostgreSQL's length().
    let big_batch = format!(
        "SELECT ssn, LEN('{}') AS n FROM people WHERE id = 1",
        "z".repeat(100_000)
    );
    let read = |sub: &str, groups: &[&str]| {
        let token = gw.gw.token(sub, groups);
        let script = format!(
            r#"{PY_HELPERS}
conn = pytds.connect(server="localhost", port=PORT, database="sales", cafile=CA,
                     access_token_callable=lambda: {token:?}, autocommit=True)
cur = conn.cursor()
run(cur, {MASKED_PEOPLE:?})
run(cur, {EVENTS_QUERY:?}, limit=3)
run(cur, {big_batch:?})
cur.execute({DOCS:?})
body = cur.fetchall()[0][1]
print("DOC", len(body) > 200000, "lorem ipsum" in body, "@example.com" in body)
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
    };
    let masked = read("pipeline-3", &["ci"]);
    let s = section(&masked, MASKED_PEOPLE);
    for row in [
        "ROW 1|'Ada Lovelace'|'[REDACTED:email]'|'[REDACTED:card]'|'[REDACTED:column]'|\
         Decimal('1234.5')|0.25|datetime.date(1815, 12, 10)|\
         datetime.datetime(2024, 3, 1, 12, 34, 56, 789000)",
        "ROW 2|'Alan Turing'|'[REDACTED:email]'|'[REDACTED:card]'|'[REDACTED:column]'|\
         Decimal('-0.01')|-1.5|datetime.date(1912, 6, 23)",
        "ROW 3|'Grace Hopper'|None|None|None|None|None|None|None",
    ] {
        assert!(s.contains(row), "{row} missing: {s}");
    }
    assert!(
        section(&masked, &big_batch).contains("ROW '[REDACTED:column]'|100000"),
        "{masked}"
    );
    let originals =
        fixture_sql("SELECT string_agg(concat_ws('|', email, card, ssn), '|') FROM people");
    for value in originals.split('|').filter(|v| !v.is_empty()) {
        assert!(!masked.contains(value), "{value} leaked: {masked}");
    }
    let s = section(&masked, EVENTS_QUERY);
    assert!(
        s.contains(&format!("ROWS {EVENTS}")) && s.contains("'event 1'"),
        "{s}"
    );
    assert!(!s.contains("@example.com"), "{s}");
    assert!(masked.contains("DOC True True False"), "{masked}");

    let key = gw.access_key("pipeline-4", &["ci"]);
    let t = text(&gw.tsql(&key, "SELECT id, email, ssn FROM people ORDER BY id"));
    assert!(
        t.contains("[REDACTED:email]") && t.contains("[REDACTED:column]"),
        "{t}"
    );
    for value in originals.split('|').filter(|v| !v.is_empty()) {
        assert!(!t.contains(value), "{value} leaked to tsql: {t}");
    }

    let clear = read("dpo-1", &["ci", "dpo"]);
    assert!(
        clear.contains("'078-05-1120'") && clear.contains("'user1@example.com'"),
        "{clear}"
    );
    assert!(clear.contains("DOC True True True"), "{clear}");

    let ends = gw.gw.audit(&["--kind", "command_end"]);
    let masked_events = ends
        .iter()
        .find(|e| e["rows"] == EVENTS as u64 && e["detail"]["masked"].is_object())
        .unwrap_or_else(|| panic!("{ends:#?}"));
    assert_eq!(
        masked_events["detail"]["masked"]["email"], EVENTS as u64,
        "{masked_events}"
    );
}
