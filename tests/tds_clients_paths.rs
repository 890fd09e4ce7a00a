//! TDS protocol paths past a plain batch, through the gateway with real drivers: an Attention
//! (tiberius's cancel) during a slow query, transaction-manager requests (begin, commit,
//! rollback) decided as `sql.session`, INFO messages reaching the client unchanged.
//!
//! The target is Microsoft's `mssql-mock-tds`, not a real SQL Server (none can run on these
//! machines; see `support::tds`): it can delay a scripted answer and drop it when an Attention
//! arrives, acknowledges transaction-manager requests with a transaction descriptor, records
//! the descriptor each later batch carried, and sends INFO tokens with a result set. What a
//! real server does inside a transaction is not shown here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use mssql_mock_tds::{ColumnDefinition, ColumnValue, InfoMessage, QueryResponse, Row, SqlDataType};
use serde_json::{Value, json};
use support::Scratch;
use support::tds::{
    Mock, MockTls, POLICY, TdsGw, TiberiusAuth, start, start_with_policy, text, tiberius, tls_files,
};

/// A batch the mock answers only after [`SLOW`]; the clients cancel it long before.
const SLOW_QUERY: &str = "SELECT id, name FROM customers_archive";
const SLOW: Duration = Duration::from_secs(8);

fn names(rows: &[&str]) -> QueryResponse {
    QueryResponse::new(
        vec![
            ColumnDefinition::new("id", SqlDataType::Int),
            ColumnDefinition::new("name", SqlDataType::NVarChar),
        ],
        rows.iter()
            .zip(1..)
            .map(|(name, id)| {
                Row::new(vec![
                    ColumnValue::Int(id),
                    ColumnValue::NVarChar((*name).into()),
                ])
            })
            .collect(),
    )
}

/// The `command` events of `statement`, each with the `command_end` of the same session and
/// number (`None` if the answer's end was not recorded).
fn with_ends(audit: &[Value], statement: &str) -> Vec<(Value, Option<Value>)> {
    audit
        .iter()
        .filter(|e| e["kind"] == "command" && e["statement"] == statement)
        .map(|c| {
            let end = audit.iter().find(|e| {
                e["kind"] == "command_end"
                    && e["session"] == c["session"]
                    && e["command"] == c["command"]
            });
            (c.clone(), end.cloned())
        })
        .collect()
}

/// tiberius (the query future dropped, then `cancel_query`) cancels a query the target is
/// still working on: the Attention is relayed to the target, which drops the answer and
/// acknowledges it; the client gets its acknowledgement at once, not after the query's delay,
/// and its session answers the next query. The cancelled command is on record with its end.
///
/// tedious is not used here: after an Attention it takes the next message as the cancelled
/// request's answer and waits for the acknowledgement in a message after it, while the mock
/// answers with the acknowledgement alone; tedious then times out its cancel directly against
/// the mock too (checked by hand), so that pairing cannot show anything about the gateway.
#[test]
fn attention_cancels_a_slow_query_and_the_session_goes_on() {
    let dir = Scratch::new("tds-attn");
    let tls = tls_files(&dir.0);
    let mock = Mock::start(MockTls::Prelogin, &tls);
    mock.register(SLOW_QUERY, names(&["archived"]).with_delay(SLOW));
    let gw = start(&mock, &tls, "mandatory", "");
    let key = gw.access_key("pipeline-8", &["ci"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (elapsed, after) = rt.block_on(async {
        let mut c = tiberius(gw.port, &tls, TiberiusAuth::Key(&key))
            .await
            .unwrap();
        let started = Instant::now();
        let query = async { c.simple_query(SLOW_QUERY).await?.into_results().await };
        let timed_out = tokio::time::timeout(Duration::from_millis(300), query).await;
        assert!(timed_out.is_err(), "the slow query answered: {timed_out:?}");
        c.cancel_query().await.unwrap();
        let elapsed = started.elapsed();
        let one = c.simple_query("SELECT 1").await.unwrap().into_row().await;
        let after = one.unwrap().unwrap().get::<i32, _>(0);
        c.close().await.unwrap();
        (elapsed, after)
    });
    assert!(
        elapsed < Duration::from_secs(4),
        "tiberius waited {elapsed:?}"
    );
    assert_eq!(after, Some(1));

    let audit = gw.gw.audit(&[]);
    let slow = with_ends(&audit, SLOW_QUERY);
    assert_eq!(slow.len(), 1, "{audit:#?}");
    for (cmd, end) in &slow {
        assert_eq!(cmd["verdict"], "allow");
        assert_eq!(cmd["action"], "sql.read");
        let end = end.as_ref().unwrap_or_else(|| panic!("no end for {cmd}"));
        let us = end["duration_us"].as_u64().unwrap();
        assert!(us < SLOW.as_micros() as u64, "{end}");
        assert!(end["rows"].is_null(), "the answer was dropped: {end}");
    }
}

/// The policy of the transaction test: rollbacks are refused.
fn no_rollback_policy() -> String {
    format!(
        "{POLICY}\n{}",
        r#"
@id("no-rollback")
@reason("rollbacks are reviewed, not run")
forbid(principal, action == Action::"sql.session", resource)
when { context.statement like "rollback*" };
"#
    )
}

/// The transaction descriptor of each batch a target connection received.
fn descriptors(mock: &Mock, connection: usize) -> Vec<u64> {
    mock.connections()[connection]
        .transaction_descriptor_headers
        .iter()
        .map(|(descriptor, _)| *descriptor)
        .collect()
}

/// Transaction-manager requests from tedious's and tiberius's transaction APIs are decided as
/// `sql.session` and relayed: the target's BEGIN answer (a transaction descriptor) reaches
/// the client, which sends it with its next batches, and its COMMIT answer ends it. A
/// rollback that policy refuses never reaches the target, so the client stays in its
/// transaction, as the descriptor of its next batch shows.
#[test]
fn transaction_manager_requests_are_decided_and_relayed() {
    let dir = Scratch::new("tds-tm");
    let tls = tls_files(&dir.0);
    let mock = Mock::start(MockTls::Prelogin, &tls);
    let gw = start_with_policy(&mock, &tls, "mandatory", &no_rollback_policy(), "");
    let token = gw.gw.token("pipeline-9", &["ci"]);
    let out = gw.node(
        &json!({ "token": token }),
        r#"
tds.run(async () => {
  const conn = await tds.connect(tds.config({ port: PORT, encrypt: true, token: ARGS.token }));
  await tds.begin(conn);
  await tds.query(conn, 'SELECT 1');
  await tds.commit(conn);
  await tds.query(conn, 'SELECT 1');
  await tds.begin(conn);
  try {
    await tds.rollback(conn);
    console.log('ROLLED BACK');
  } catch (e) {
    console.log('ROLLBACK REFUSED', e.message);
  }
  await tds.query(conn, 'SELECT 1');
  await tds.commit(conn);
  await tds.query(conn, 'SELECT 1');
  console.log('DONE');
  await tds.close(conn);
});
"#,
    );
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("DONE"),
        "{t}\n{}",
        gw.gw.log_text()
    );
    assert!(
        t.contains("ROLLBACK REFUSED portcullis:") && t.contains("rollbacks are reviewed"),
        "{t}"
    );
    // tedious's session set-up batch, then a SELECT in each state.
    assert_eq!(descriptors(&mock, 0), [0, 1, 0, 1, 0]);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let refused = rt.block_on(async {
        let mut c = tiberius(gw.port, &tls, TiberiusAuth::Token(&token))
            .await
            .unwrap();
        c.begin_transaction().await.unwrap();
        c.simple_query("SELECT 1")
            .await
            .unwrap()
            .into_results()
            .await
            .unwrap();
        let refused = c.rollback_transaction().await.err().map(|e| e.to_string());
        c.simple_query("SELECT 1")
            .await
            .unwrap()
            .into_results()
            .await
            .unwrap();
        c.commit_transaction().await.unwrap();
        c.simple_query("SELECT 1")
            .await
            .unwrap()
            .into_results()
            .await
            .unwrap();
        c.close().await.unwrap();
        refused
    });
    let refused = refused.expect("the rollback is refused");
    assert!(refused.contains("rollbacks are reviewed"), "{refused}");
    assert_eq!(descriptors(&mock, 1), [1, 1, 0]);

    let audit = gw.gw.audit(&[]);
    for (statement, n) in [("BEGIN TRANSACTION", 3), ("COMMIT TRANSACTION", 3)] {
        let found = with_ends(&audit, statement);
        assert_eq!(found.len(), n, "{statement}: {audit:#?}");
        for (cmd, end) in found {
            assert_eq!(cmd["action"], "sql.session");
            assert_eq!(cmd["verdict"], "allow");
            assert_eq!(cmd["policies"], json!(["session"]), "{cmd}");
            assert!(end.is_some(), "the target answered {cmd}");
        }
    }
    let rollbacks = with_ends(&audit, "ROLLBACK TRANSACTION");
    assert_eq!(rollbacks.len(), 2, "{audit:#?}");
    for (cmd, end) in rollbacks {
        assert_eq!(cmd["action"], "sql.session");
        assert_eq!(cmd["verdict"], "deny");
        assert_eq!(cmd["policies"], json!(["no-rollback"]), "{cmd}");
        assert!(
            end.is_none(),
            "a refused request has no answer from the target"
        );
    }
}

/// A result set whose INFO messages name what a tracing server adds (as Fabric DW does).
const INFO_QUERY: &str = "SELECT id, name FROM report_runs";

fn infos() -> Vec<InfoMessage> {
    vec![
        InfoMessage {
            number: 50001,
            state: 7,
            severity: 10,
            message: "Statement ID: {6A0F-77}; Query hash: 0x1A2B3C; 'archive' read".into(),
            server_name: "mock-node-7".into(),
            proc_name: "report_proc".into(),
            line_number: 42,
        },
        InfoMessage::new(
            8153,
            10,
            "Warning: Null value is eliminated by an aggregate.",
        ),
    ]
}

/// Which INFO messages (number, state, class, text, server, procedure, line) tedious and
/// python-tds report for [`INFO_QUERY`] through gateway `gw`.
fn reported_infos(gw: &TdsGw) -> (Vec<Value>, Vec<Value>) {
    let key = gw.access_key("pipeline-10", &["ci"]);
    let out = gw.node(
        &json!({ "key": key, "q": INFO_QUERY }),
        r#"
tds.run(async () => {
  const conn = await tds.connect(tds.config({ port: PORT, encrypt: true, key: ARGS.key }));
  conn.on('infoMessage', (i) => console.log('INFO ' + JSON.stringify(
    [i.number, i.state, i.class, i.message, i.serverName, i.procName, i.lineNumber])));
  const r = await tds.query(conn, ARGS.q);
  console.log('ROWS', JSON.stringify(r.rows));
  await tds.close(conn);
});
"#,
    );
    let t = text(&out);
    assert!(
        out.status.success() && t.contains(r#"ROWS [[1,"first run"],[2,"second run"]]"#),
        "{t}\n{}",
        gw.gw.log_text()
    );
    let tedious = parse_infos(&t);
    let out = gw.python(&format!(
        r#"
import json
conn = pytds.connect(server="localhost", port=PORT, database="sales", cafile=CA,
                     user="pipeline", password={key:?}, autocommit=True)
cur = conn.cursor()
cur.execute({INFO_QUERY:?})
print("ROWS", json.dumps([list(r) for r in cur.fetchall()]))
for _, m in cur.messages:
    print("INFO " + json.dumps([m.msg_no, m.state, m.severity, m.text, m.srvname, m.procname, m.line]))
"#
    ));
    let t = text(&out);
    assert!(
        out.status.success() && t.contains(r#"ROWS [[1, "first run"], [2, "second run"]]"#),
        "{t}"
    );
    (tedious, parse_infos(&t))
}

fn parse_infos(t: &str) -> Vec<Value> {
    t.lines()
        .filter_map(|l| l.strip_prefix("INFO "))
        .map(|j| serde_json::from_str::<Value>(j).unwrap())
        .filter(|v| v[0] == 50001 || v[0] == 8153)
        .collect()
}

/// INFO tokens that come with a result set reach tedious and python-tds with every field as
/// the target sent it, on a plain session (forwarded byte for byte) and on a masked one
/// (tokens read and packed again) when the request touches nothing a rule covers.
#[test]
fn info_messages_reach_the_client_unchanged() {
    let dir = Scratch::new("tds-info");
    let tls = tls_files(&dir.0);
    let mock = Mock::start(MockTls::Prelogin, &tls);
    mock.register(
        INFO_QUERY,
        names(&["first run", "second run"]).with_info_tokens(infos()),
    );
    let expected: Vec<Value> = infos()
        .iter()
        .map(|i| {
            json!([
                i.number,
                i.state,
                i.severity,
                i.message,
                i.server_name,
                i.proc_name,
                i.line_number
            ])
        })
        .collect();
    let masking = r#"
[[masking]]
connections = ["sales"]
detectors = ["email", "card"]
columns = ["customers.card"]
"#;
    for extra in ["", masking] {
        let gw = start(&mock, &tls, "mandatory", extra);
        let (tedious, pytds) = reported_infos(&gw);
        assert_eq!(tedious, expected, "tedious, masking: {}", !extra.is_empty());
        assert_eq!(
            pytds,
            expected,
            "python-tds, masking: {}",
            !extra.is_empty()
        );
    }
}
