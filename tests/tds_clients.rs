//! More real TDS drivers through the gateway, and the protocol paths past a plain batch.
//!
//! Clients: Node `tedious` (in clear where a listener allows it, TLS inside PRELOGIN, TDS 8.0
//! strict TLS; an access key as the SQL login's password or a Portcullis token in LOGIN7's
//! FEDAUTH extension) and the `mssql` package on top of it; Python `pymssql` (FreeTDS's
//! DB-Library, bundled in its wheel) with an access key; Rust `tiberius` with an access key
//! and with `AADToken`, TLS verified against the test CA. Each logs in, reads rows, and is
//! refused a DDL statement with the rule's reason before the target sees it. Attention,
//! transaction-manager requests and INFO messages are in `tds_clients_paths.rs`.
//!
//! The target is Microsoft's `mssql-mock-tds`, not a real SQL Server (none can run on these
//! machines; see `support::tds`): it answers scripted result sets and records what each login
//! sent and how many batches and RPCs reached it. Real execution is not shown by these tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use mssql_mock_tds::QueryResponse;
use serde_json::{Value, json};
use support::Scratch;
use support::tds::{
    CUSTOMERS_QUERY, Mock, MockTls, TdsGw, TiberiusAuth, start, start_relaxed, text, tiberius,
    tls_files,
};

/// What every client run through `tds.probe` (or its equivalent) printed under `label`: both
/// rows, the DDL refused with the rule's reason, and the session still answering after it.
fn assert_probe(t: &str, label: &str) {
    for row in [
        "1|Ada Lovelace|ada@example.com|4111 1111 1111 1111",
        "2|Alan Turing|alan@example.org|5500-0000-0000-0004",
    ] {
        assert!(t.contains(&format!("{label} ROW {row}")), "{label}: {t}");
    }
    let refused = format!("{label} REFUSED 229 portcullis:");
    assert!(
        t.lines()
            .any(|l| l.starts_with(&refused) && l.contains("schema changes go through migrations")),
        "{label}: the rule's reason reaches the client: {t}"
    );
    assert!(!t.contains(&format!("{label} DDL RAN")), "{t}");
    assert!(t.contains(&format!("{label} AFTER 1")), "{label}: {t}");
}

/// Every request the mock received was admitted by policy, and nothing else reached it: the
/// allowed commands (but a `USE` of the client's own database, which the gateway answers)
/// match the mock's count of batches and RPCs, and each refused command is a DDL statement.
fn assert_only_admitted_reached(mock: &Mock, gw: &TdsGw) -> Vec<Value> {
    let commands = gw.gw.audit(&["--kind", "command"]);
    let forwarded = commands
        .iter()
        .filter(|e| e["verdict"] == "allow")
        .filter(|e| {
            let s = e["statement"].as_str().unwrap_or("").to_lowercase();
            !s.trim_start().starts_with("use ")
        })
        .count();
    assert_eq!(mock.requests(), forwarded, "{commands:#?}");
    let denied: Vec<_> = commands.iter().filter(|e| e["verdict"] == "deny").collect();
    assert!(!denied.is_empty(), "{commands:#?}");
    assert!(
        denied
            .iter()
            .all(|e| e["action"] == "sql.ddl" && e["policies"][0] == "no-ddl"),
        "{denied:#?}"
    );
    commands
}

/// The subjects that ran commands, with how each proved itself (`jwt`, `access_key`).
fn methods(commands: &[Value]) -> Vec<(String, String)> {
    let mut m: Vec<_> = commands
        .iter()
        .map(|e| {
            (
                e["identity"]["subject"].as_str().unwrap_or("").to_string(),
                e["identity"]["method"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    m.sort();
    m.dedup();
    m
}

/// tedious without encryption sends its access key in clear only where the listener allows
/// it (`required = false`); on a listener that requires TLS it is told so at PRELOGIN and
/// gives up before sending any credential.
#[test]
fn tedious_in_clear_only_where_the_listener_allows_it() {
    let dir = Scratch::new("tds-tedious-plain");
    let tls = tls_files(&dir.0);
    let mock = Mock::start(MockTls::Off, &tls);
    let (gw, plain) = start_relaxed(&mock, &tls, "off", "");
    let key = gw.access_key("pipeline-1", &["ci"]);
    let args = json!({ "plain": plain, "key": key, "read": CUSTOMERS_QUERY });
    let out = gw.node(
        &args,
        r#"
tds.run(async () => {
  const conn = await tds.connect(tds.config({ port: ARGS.plain, encrypt: false, key: ARGS.key }));
  await tds.probe(conn, 'plain', ARGS.read);
  await tds.close(conn);
  try {
    await tds.connect(tds.config({ port: PORT, encrypt: false, key: ARGS.key }));
    console.log('required LOGGED IN');
  } catch (e) {
    console.log('required REFUSED', e.code, e.message);
  }
});
"#,
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}\n{}", gw.gw.log_text());
    assert_probe(&t, "plain");
    assert!(
        t.contains("required REFUSED EENCRYPT") && !t.contains("required LOGGED IN"),
        "{t}"
    );
    assert_eq!(
        mock.connections().len(),
        1,
        "one target login: the plain one"
    );
    let commands = assert_only_admitted_reached(&mock, &gw);
    assert_eq!(
        methods(&commands),
        [("pipeline-1".to_string(), "access_key".to_string())]
    );
}

/// tedious over TLS negotiated in PRELOGIN and over TDS 8.0 strict TLS, each with an access
/// key and with a Portcullis token as its Azure AD access token (FEDAUTH); the certificate is
/// checked against the test CA. The target leg is TLS too.
#[test]
fn tedious_over_tls_and_strict_tls_with_keys_and_fedauth_tokens() {
    let dir = Scratch::new("tds-tedious-tls");
    let tls = tls_files(&dir.0);
    let mock = Mock::start(MockTls::Prelogin, &tls);
    let gw = start(&mock, &tls, "mandatory", "");
    let args = json!({
        "key": gw.access_key("pipeline-2", &["ci"]),
        "token": gw.gw.token("pipeline-3", &["ci"]),
        "read": CUSTOMERS_QUERY,
    });
    let out = gw.node(
        &args,
        r#"
tds.run(async () => {
  for (const [label, encrypt, cred] of [
    ['tls-key', true, { key: ARGS.key }],
    ['tls-token', true, { token: ARGS.token }],
    ['strict-token', 'strict', { token: ARGS.token }],
    ['strict-key', 'strict', { key: ARGS.key }],
  ]) {
    const conn = await tds.connect(tds.config({ port: PORT, encrypt, ...cred }));
    await tds.probe(conn, label, ARGS.read);
    await tds.close(conn);
  }
  try {
    await tds.connect(tds.config({ port: PORT, encrypt: true, token: 'not-a-token' }));
    console.log('bad LOGGED IN');
  } catch (e) {
    console.log('bad REFUSED', e.message);
  }
});
"#,
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}\n{}", gw.gw.log_text());
    for label in ["tls-key", "tls-token", "strict-token", "strict-key"] {
        assert_probe(&t, label);
    }
    assert!(
        t.contains("bad REFUSED") && t.contains("portcullis") && !t.contains("bad LOGGED IN"),
        "{t}"
    );
    assert_eq!(
        mock.connections().len(),
        4,
        "no target login for a bad token"
    );
    let commands = assert_only_admitted_reached(&mock, &gw);
    assert_eq!(
        methods(&commands),
        [
            ("pipeline-2".to_string(), "access_key".to_string()),
            ("pipeline-3".to_string(), "jwt".to_string())
        ]
    );
}

/// A batch the mock answers for the `mssql` package's parameterised read (an
/// `sp_executesql` RPC; the mock matches an RPC by its upper-case text).
const BY_ID: &str = "SELECT ID, NAME FROM CUSTOMERS WHERE ID = @ID";

/// The `mssql` package (a pool over tedious) with a token: a batch and a parameterised read
/// (`sp_executesql`) return rows; DDL sent as an `sp_executesql` RPC is refused with the
/// rule's reason.
#[test]
fn mssql_package_reads_batches_and_rpcs_with_a_token() {
    let dir = Scratch::new("tds-mssql");
    let tls = tls_files(&dir.0);
    let mock = Mock::start(MockTls::Prelogin, &tls);
    mock.register(
        BY_ID,
        QueryResponse::new(
            vec![mssql_mock_tds::ColumnDefinition::new(
                "name",
                mssql_mock_tds::SqlDataType::NVarChar,
            )],
            vec![mssql_mock_tds::Row::new(vec![
                mssql_mock_tds::ColumnValue::NVarChar("Ada Lovelace".into()),
            ])],
        ),
    );
    let gw = start(&mock, &tls, "mandatory", "");
    let args = json!({ "token": gw.gw.token("pipeline-4", &["ci"]), "read": CUSTOMERS_QUERY, "byId": BY_ID });
    let out = gw.node(
        &args,
        r#"
const sql = require('mssql');
tds.run(async () => {
  const pool = await sql.connect({
    server: 'localhost', port: PORT, database: 'sales',
    authentication: { type: 'azure-active-directory-access-token', options: { token: ARGS.token } },
    options: { encrypt: true, trustServerCertificate: false },
    pool: { max: 1 },
  });
  // A batch: `query` would send it as an sp_executesql RPC, which the mock matches only by
  // upper-case text.
  const all = await pool.request().batch(ARGS.read);
  for (const r of all.recordset) console.log('mssql ROW', [r.id, r.name, r.email, r.card].join('|'));
  const one = await pool.request().input('ID', sql.Int, 1).query(ARGS.byId);
  console.log('mssql RPC', JSON.stringify(one.recordset));
  try {
    await pool.request().query('DROP TABLE customers');
    console.log('mssql DDL RAN');
  } catch (e) {
    console.log('mssql REFUSED', e.number, e.message);
  }
  const after = await pool.request().query('SELECT 1');
  console.log('mssql AFTER', Object.values(after.recordset[0]).join('|'));
  await pool.close();
});
"#,
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}\n{}", gw.gw.log_text());
    assert_probe(&t, "mssql");
    assert!(t.contains(r#"mssql RPC [{"name":"Ada Lovelace"}]"#), "{t}");
    let commands = assert_only_admitted_reached(&mock, &gw);
    assert!(
        commands
            .iter()
            .any(|e| e["statement"] == BY_ID && e["action"] == "sql.read"),
        "the RPC was decided by the statement it carries: {commands:#?}"
    );
}

/// pymssql (FreeTDS's DB-Library, bundled) with an access key as its password, TLS required
/// and verified against the test CA.
#[test]
fn pymssql_with_an_access_key_over_tls() {
    let dir = Scratch::new("tds-pymssql");
    let tls = tls_files(&dir.0);
    let mock = Mock::start(MockTls::Prelogin, &tls);
    let gw = start(&mock, &tls, "mandatory", "");
    let key = gw.access_key("pipeline-5", &["ci"]);
    let out = gw.pymssql(&format!(
        r#"
conn = pymssql.connect(server="localhost", port=str(PORT), user="pipeline", password={key:?},
                       database="sales", tds_version="7.4", encryption="require", autocommit=True,
                       login_timeout=10)
cur = conn.cursor()
cur.execute({CUSTOMERS_QUERY:?})
for row in cur.fetchall():
    print("pymssql ROW", "|".join(str(v) for v in row))
try:
    cur.execute("DROP TABLE customers")
    print("pymssql DDL RAN")
except pymssql.Error as e:
    print("pymssql REFUSED", e.args[0], e.args[1].decode(errors="replace").replace("\n", " "))
cur.execute("SELECT 1")
print("pymssql AFTER", cur.fetchone()[0])
conn.close()
"#
    ));
    let t = text(&out);
    assert!(out.status.success(), "{t}\n{}", gw.gw.log_text());
    assert_probe(&t, "pymssql");
    let commands = assert_only_admitted_reached(&mock, &gw);
    assert_eq!(
        methods(&commands),
        [("pipeline-5".to_string(), "access_key".to_string())]
    );
}

/// Read rows, be refused DDL and carry on, with tiberius: what the other clients print, so
/// [`assert_probe`] checks it.
async fn tiberius_probe(
    c: &mut tiberius::Client<tokio_util::compat::Compat<tokio::net::TcpStream>>,
    label: &str,
) -> String {
    let mut out = String::new();
    let rows = c
        .simple_query(CUSTOMERS_QUERY)
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    for r in rows {
        let id: i32 = r.get(0).unwrap();
        let cols: Vec<&str> = (1..4).map(|i| r.get::<&str, _>(i).unwrap()).collect();
        out += &format!("{label} ROW {id}|{}\n", cols.join("|"));
    }
    let ddl = match c.simple_query("DROP TABLE customers").await {
        Ok(stream) => stream.into_results().await.map(|_| ()),
        Err(e) => Err(e),
    };
    match ddl {
        Ok(()) => out += &format!("{label} DDL RAN\n"),
        Err(tiberius::error::Error::Server(e)) => {
            out += &format!("{label} REFUSED {} {}\n", e.code(), e.message());
        }
        Err(e) => out += &format!("{label} FAILED {e}\n"),
    }
    let one = c
        .simple_query("SELECT 1")
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    out += &format!("{label} AFTER {}\n", one.get::<i32, _>(0).unwrap());
    out
}

/// tiberius (rustls, the CA given with `trust_cert_ca`) with an access key as its SQL login
/// password and with a Portcullis token as `AADToken`, which it sends in FEDAUTH; a client
/// that does not trust the CA refuses the gateway's certificate.
#[test]
fn tiberius_with_a_key_and_an_aad_token_verified_against_the_ca() {
    let dir = Scratch::new("tds-tiberius");
    let tls = tls_files(&dir.0);
    let mock = Mock::start(MockTls::Strict, &tls);
    let gw = start(&mock, &tls, "strict", "");
    let key = gw.access_key("pipeline-6", &["ci"]);
    let token = gw.gw.token("pipeline-7", &["ci"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (t, untrusted) = rt.block_on(async {
        let mut t = String::new();
        let mut c = tiberius(gw.port, &tls, TiberiusAuth::Key(&key))
            .await
            .unwrap();
        t += &tiberius_probe(&mut c, "key").await;
        c.close().await.unwrap();
        let mut c = tiberius(gw.port, &tls, TiberiusAuth::Token(&token))
            .await
            .unwrap();
        t += &tiberius_probe(&mut c, "aad").await;
        c.close().await.unwrap();
        // Another CA: the gateway's certificate is not trusted.
        let other = tls_files(&dir.0.join("other"));
        let untrusted = tiberius(gw.port, &other, TiberiusAuth::Token(&token)).await;
        (t, untrusted.err().map(|e| e.to_string()))
    });
    assert_probe(&t, "key");
    assert_probe(&t, "aad");
    let untrusted = untrusted.expect("a certificate from another CA is refused");
    assert!(untrusted.contains("certificate"), "{untrusted}");
    let commands = assert_only_admitted_reached(&mock, &gw);
    assert_eq!(
        methods(&commands),
        [
            ("pipeline-6".to_string(), "access_key".to_string()),
            ("pipeline-7".to_string(), "jwt".to_string())
        ]
    );
}
