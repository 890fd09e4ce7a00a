//! Property tests of masking lineage, through the gateway with a real client (tokio-postgres,
//! simple query protocol) against the real PostgreSQL fixture: generated SELECTs over a table
//! with covered columns (`customers_pii.ssn`, `customers_pii.card` by rule) — string
//! functions, casts, concatenation, whole-row values, subqueries, CTEs, UNIONs and views —
//! never return a covered value or a character-for-character transform of one; and outputs
//! that depend on no covered column equal what a direct connection returns.

// Test code: a step that fails fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use support::masking::{fixture, gateway_with};
use support::pg;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// Column rules for the covered columns (the SSNs are bare digits no detector knows).
const MASKING: &str = r#"
[[masking]]
connections = ["orders"]
detectors = ["card", "email"]
columns = ["customers_pii.ssn", "customers_pii.card"]
"#;

/// The covered values as stored.
const COVERED: &[&str] = &[
    "078051120",
    "219099999",
    "457555462",
    "4111 1111 1111 1111",
    "5500-0000-0000-0004",
    "3782-822463-10005",
];

/// An expression, and whether it reads a covered column.
#[derive(Debug, Clone)]
struct E {
    sql: String,
    covered: bool,
}

fn leaf() -> impl Strategy<Value = E> {
    prop_oneof![
        Just(E {
            sql: "c.ssn".into(),
            covered: true
        }),
        Just(E {
            sql: "card".into(),
            covered: true
        }),
        Just(E {
            sql: "c::text".into(),
            covered: true
        }),
        Just(E {
            sql: "to_jsonb(c)->>'ssn'".into(),
            covered: true
        }),
        Just(E {
            sql: "row(c.*)::text".into(),
            covered: true
        }),
        Just(E {
            sql: "c.name".into(),
            covered: false
        }),
        Just(E {
            sql: "id::text".into(),
            covered: false
        }),
        Just(E {
            sql: "'lit'".into(),
            covered: false
        }),
    ]
}

fn expr() -> impl Strategy<Value = E> {
    leaf().prop_recursive(3, 12, 2, |inner| {
        let wrap = |f: &'static str| {
            inner.clone().prop_map(move |e| E {
                sql: f.replace('X', &e.sql),
                covered: e.covered,
            })
        };
        prop_oneof![
            wrap("upper(X)"),
            wrap("lower(X)"),
            wrap("translate(X, '0123456789', 'abcdefghij')"),
            wrap("reverse(X)"),
            wrap("(X || '')"),
            wrap("substr(X, 1, 60)"),
            wrap("replace(X, '-', '')"),
            wrap("replace(replace(X, ' ', ''), '-', '')"),
            wrap("coalesce(X, '')"),
            wrap("btrim(X)"),
            wrap("(X)::varchar"),
            (inner.clone(), inner).prop_map(|(a, b)| E {
                sql: format!("concat({}, '/', {})", a.sql, b.sql),
                covered: a.covered || b.covered,
            }),
        ]
    })
}

/// How the expression is queried.
fn query(e: &E, form: u8, view: &str) -> (Option<String>, String) {
    let select = format!("SELECT {} AS v FROM customers_pii c", e.sql);
    match form % 5 {
        0 => (None, format!("{select} ORDER BY c.id")),
        1 => (None, format!("SELECT v FROM ({select}) s")),
        2 => (None, format!("WITH s AS ({select}) SELECT v FROM s")),
        3 => (None, format!("{select} UNION ALL SELECT 'x'")),
        _ => (
            Some(format!(
                "CREATE VIEW {view} AS {select}; GRANT SELECT ON {view} TO app;"
            )),
            format!("SELECT v FROM {view}"),
        ),
    }
}

/// Every way a covered value could come back: as stored, without separators, digits as
/// letters, reversed; any 8-character run of those.
fn forbidden() -> Vec<String> {
    let tr = |s: &str| -> String {
        s.chars()
            .map(|c| c.to_digit(10).map_or(c, |d| (b'a' + d as u8) as char))
            .collect()
    };
    let compact = |s: &str| -> String { s.chars().filter(|c| c.is_alphanumeric()).collect() };
    let mut out = Vec::new();
    for v in COVERED {
        for form in [v.to_string(), compact(v), tr(v), tr(&compact(v))] {
            for f in [form.clone(), form.chars().rev().collect::<String>()] {
                let chars: Vec<char> = f.chars().collect();
                for w in chars.windows(8) {
                    out.push(w.iter().collect::<String>().to_lowercase());
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

async fn values(client: &Client, sql: &str) -> Result<Vec<Option<String>>, String> {
    let msgs = client.simple_query(sql).await.map_err(|e| e.to_string())?;
    Ok(msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).map(String::from)),
            _ => None,
        })
        .collect())
}

#[test]
fn generated_selects_never_return_a_covered_value_or_a_transform_of_one() {
    fixture();
    let gw = gateway_with(MASKING);
    let token = gw.token("analyst", &["ci"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let connect = |port: u16, user: &str, password: &str| {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(port)
            .user(user)
            .dbname("orders")
            .password(password);
        rt.block_on(async {
            let (client, conn) = cfg.connect(NoTls).await.expect("connect");
            tokio::spawn(conn);
            client
        })
    };
    let masked = connect(gw.pg_port, "ci", &token);
    let direct = connect(pg().port, "app", &pg().password);
    let forbidden = forbidden();
    let views = AtomicUsize::new(0);
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&(expr(), any::<u8>()), |(e, form)| {
        let view = format!("props_v{}", views.fetch_add(1, Ordering::Relaxed));
        let (ddl, sql) = query(&e, form, &view);
        if let Some(ddl) = ddl {
            pg().admin_sql(&ddl);
        }
        let got = rt.block_on(values(&masked, &sql));
        let want = rt.block_on(values(&direct, &sql));
        let (got, want) = match (got, want) {
            (Ok(g), Ok(w)) => (g, w),
            // A statement PostgreSQL refuses fails the same way both ways.
            (Err(_), Err(_)) => return Ok(()),
            (g, w) => panic!("{sql}: gateway {g:?}, direct {w:?}"),
        };
        prop_assert_eq!(got.len(), want.len(), "{}", sql);
        for v in got.iter().flatten() {
            let low = v.to_lowercase();
            if let Some(f) = forbidden.iter().find(|f| low.contains(f.as_str())) {
                prop_assert!(false, "{sql} returned {v:?}, which holds {f:?}");
            }
        }
        if !e.covered {
            prop_assert_eq!(&got, &want, "{}", sql);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
