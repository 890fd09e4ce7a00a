//! The SQL Server gateway end to end: real TDS clients (FreeTDS `tsql`, `python-tds`) log in
//! with a Portcullis token, the gateway logs in to the target with the SQL login it holds,
//! and every batch is decided and audited before the target sees it.
//!
//! No real SQL Server or Azure SQL runs here: the target is Microsoft's `mssql-mock-tds`
//! (see `support::tds`), which answers scripted result sets. What the mock cannot show (real
//! query execution, permissions inside SQL Server) is not claimed by these tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::Scratch;
use support::tds::{CUSTOMERS_QUERY, Mock, MockTls, start, text, tls_files};

/// A client that can only send a password logs in with an access key over TLS; the target
/// is reached over TLS (negotiated in PRELOGIN) with the held SQL login, never the caller's
/// key; reads are answered, DDL is refused by policy before the target sees it, and both are
/// on record with the caller's identity.
#[test]
fn tsql_reads_through_the_gateway_and_ddl_is_refused_before_the_target() {
    let dir = Scratch::new("tds-tsql");
    let tls = tls_files(&dir.0);
    let mock = Mock::start(MockTls::Prelogin, &tls);
    let gw = start(&mock, &tls, "mandatory", "");
    let key = gw.access_key("pipeline-7", &["ci"]);
    assert!(key.len() <= 128, "a LOGIN7 password holds 128 characters");

    let out = gw.tsql(&key, CUSTOMERS_QUERY);
    let t = text(&out);
    assert!(
        t.contains("Ada Lovelace") && t.contains("alan@example.org"),
        "{t}"
    );
    // The target saw the gateway's login, not the caller's key or a token.
    let logins = mock.connections();
    assert!(!logins.is_empty());
    assert!(
        logins.iter().all(|c| c.received_token.is_none()),
        "{logins:?}"
    );
    assert!(
        logins
            .iter()
            .all(|c| c.received_database.as_deref() == Some("sales")),
        "{logins:?}"
    );

    let before = mock.requests();
    let out = gw.tsql(&key, "DROP TABLE customers");
    let t = text(&out);
    assert!(
        t.contains("schema changes go through migrations"),
        "the rule's reason reaches the client: {t}"
    );
    assert_eq!(
        mock.requests(),
        before,
        "the target never saw the refused batch"
    );

    let audit = gw.gw.audit(&[]);
    let commands: Vec<_> = audit.iter().filter(|e| e["kind"] == "command").collect();
    // tsql sends each batch with its line's newline.
    let statement =
        |e: &serde_json::Value| e["statement"].as_str().map(str::trim).map(str::to_string);
    assert!(
        commands
            .iter()
            .any(|e| statement(e).as_deref() == Some(CUSTOMERS_QUERY)
                && e["verdict"] == "allow"
                && e["action"] == "sql.read"
                && e["protocol"] == "tds"
                && e["identity"]["subject"] == "pipeline-7"),
        "{commands:?}"
    );
    assert!(
        commands
            .iter()
            .any(|e| statement(e).as_deref() == Some("DROP TABLE customers")
                && e["verdict"] == "deny"),
        "{commands:?}"
    );
    let ends: Vec<_> = audit
        .iter()
        .filter(|e| e["kind"] == "command_end")
        .collect();
    // Each admitted batch was answered once; the refused one never ran.
    let admitted = commands.iter().filter(|e| e["verdict"] == "allow").count();
    assert_eq!(ends.len(), admitted, "{commands:#?} {ends:#?}");
    assert!(ends.iter().all(|e| e["protocol"] == "tds"));
}

/// A client that passes an access token in LOGIN7's FEDAUTH extension (python-tds's
/// `access_token_callable`, as for an Entra token) is verified from it; a bad token is
/// refused with a login error the driver reports, and nothing reaches the target.
#[test]
fn python_tds_logs_in_with_a_fedauth_token_and_bad_tokens_are_refused() {
    let dir = Scratch::new("tds-fedauth");
    let tls = tls_files(&dir.0);
    let mock = Mock::start(MockTls::Strict, &tls);
    let gw = start(&mock, &tls, "strict", "");
    let token = gw.gw.token("pipeline-9", &["ci"]);
    let script = format!(
        r#"
conn = pytds.connect(server="localhost", port=PORT, database="sales", cafile=CA,
                     access_token_callable=lambda: {token:?}, autocommit=True)
cur = conn.cursor()
cur.execute("SELECT id, name, email, card FROM customers")
for row in cur.fetchall():
    print("|".join(str(v) for v in row))
try:
    cur.execute("CREATE TABLE t (a int)")
    print("DDL RAN")
except pytds.tds_base.Error as e:
    print("REFUSED", e)
"#
    );
    let out = gw.python(&script);
    let t = text(&out);
    assert!(out.status.success(), "{t}\n{}", gw.gw.log_text());
    assert!(t.contains("1|Ada Lovelace|ada@example.com"), "{t}");
    assert!(t.contains("REFUSED") && !t.contains("DDL RAN"), "{t}");

    let before = mock.connections().len();
    let bad = r#"
try:
    pytds.connect(server="localhost", port=PORT, database="sales", cafile=CA,
                  access_token_callable=lambda: "not-a-token")
    print("LOGGED IN")
except pytds.tds_base.Error as e:
    print("LOGIN FAILED", e)
"#;
    let t = text(&gw.python(bad));
    assert!(
        t.contains("LOGIN FAILED") && t.contains("portcullis"),
        "{t}"
    );
    assert_eq!(
        mock.connections().len(),
        before,
        "no target login for a bad token"
    );
    let failed: Vec<_> = gw
        .gw
        .audit(&["--kind", "auth_failed"])
        .into_iter()
        .filter(|e| e["kind"] == "auth_failed")
        .collect();
    assert!(!failed.is_empty());
}
