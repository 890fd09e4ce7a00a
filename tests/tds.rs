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
use support::tds::{CUSTOMERS_QUERY, Mock, MockTls, customers, start, text, tls_files};

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

    // Each session is listed and replays as a transcript: the batch, its outcome, the refusal.
    let list = gw.gw.cli(&["sessions", "list"]);
    assert!(list.ok, "{}", list.stderr);
    assert!(
        list.stdout.contains("builtin/pipeline-7"),
        "{}",
        list.stdout
    );
    let session_of = |stmt: &str| {
        commands
            .iter()
            .find(|e| statement(e).as_deref() == Some(stmt))
            .and_then(|e| e["session"].as_str())
            .map(str::to_string)
            .unwrap()
    };
    let read = gw
        .gw
        .cli(&["replay", &session_of(CUSTOMERS_QUERY), "--no-wait"]);
    assert!(read.ok, "{}", read.stderr);
    assert!(
        read.stdout.contains(&format!("sales=> {CUSTOMERS_QUERY}"))
            && read.stdout.contains("2 rows")
            && read.stdout.contains("by builtin/pipeline-7 on sales")
            // tsql closes its TLS session without close_notify: an ordinary end, not an error.
            && read.stdout.contains("-- session ended at +")
            && !read.stdout.contains("close_notify"),
        "{}",
        read.stdout
    );
    let refused = gw
        .gw
        .cli(&["replay", &session_of("DROP TABLE customers"), "--no-wait"]);
    assert!(
        refused.stdout.contains("sales=> DROP TABLE customers")
            && refused.stdout.contains("DENY by [")
            && refused
                .stdout
                .contains("schema changes go through migrations"),
        "{}",
        refused.stdout
    );
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

/// Parameterised statements travel as `sp_executesql` RPCs: the statement inside is what is
/// decided. A write is refused before the target sees it; a read with parameters runs.
#[test]
fn rpc_statements_are_decided_by_the_sql_they_carry() {
    let dir = Scratch::new("tds-rpc");
    let tls = tls_files(&dir.0);
    let mock = Mock::start(MockTls::Prelogin, &tls);
    let gw = start(&mock, &tls, "mandatory", "");
    let token = gw.gw.token("pipeline-5", &["ci"]);
    let script = format!(
        r#"
conn = pytds.connect(server="localhost", port=PORT, database="sales", cafile=CA,
                     access_token_callable=lambda: {token:?}, autocommit=True)
cur = conn.cursor()
cur.execute("SELECT id, name FROM customers WHERE id = %s", (1,))
print("READ OK", cur.description is not None or True)
try:
    cur.execute("DELETE FROM customers WHERE id = %s", (2,))
    print("WRITE RAN")
except pytds.tds_base.Error as e:
    print("REFUSED", e)
"#
    );
    let before = mock.requests();
    let out = gw.python(&script);
    let t = text(&out);
    assert!(out.status.success(), "{t}\n{}", gw.gw.log_text());
    assert!(t.contains("READ OK"), "{t}");
    assert!(
        t.contains("REFUSED") && t.contains("sql.write") && !t.contains("WRITE RAN"),
        "{t}"
    );
    let commands = gw.gw.audit(&["--kind", "command"]);
    let delete = commands
        .iter()
        .find(|e| {
            e["statement"]
                .as_str()
                .is_some_and(|s| s.starts_with("DELETE"))
        })
        .expect("the DELETE is on record");
    assert_eq!(delete["verdict"], "deny");
    assert_eq!(delete["action"], "sql.write");
    let read = commands
        .iter()
        .find(|e| {
            e["statement"]
                .as_str()
                .is_some_and(|s| s.starts_with("SELECT id, name"))
        })
        .expect("the SELECT is on record");
    assert_eq!(read["verdict"], "allow");
    assert_eq!(read["tables"][0], "customers");
    // Everything admitted reached the target (but a USE of its own database, which the
    // gateway answers); the DELETE did not.
    let forwarded = commands
        .iter()
        .filter(|e| {
            e["verdict"] == "allow"
                && !e["statement"]
                    .as_str()
                    .unwrap_or("")
                    .to_lowercase()
                    .starts_with("use ")
        })
        .count();
    assert_eq!(mock.requests() - before, forwarded, "{commands:#?}");
}

/// A statement python-tds prepares with `sp_prepexec` (upper case, and not holding
/// `CUSTOMERS_QUERY`'s text, which the mock would match too: see
/// `Mock::register_with_handle`), and the parameter value its `sp_execute` sends, by which
/// the mock picks that execute's answer (it never sees the statement again).
const PREPARED: &str = "SELECT ID,NAME,EMAIL,CARD FROM CUSTOMERS WHERE NAME <> @N";
const BY_HANDLE: &str = "BY-HANDLE";

/// Prepared statements travel as `sp_prepexec` / `sp_prepare` / `sp_execute` RPCs: a prepare
/// is decided as the statement it carries (a write refused before the target sees it, a read
/// forwarded); the handle the target hands back is remembered, so `sp_execute <handle>` is
/// decided as that statement (same action and tables on record); an `sp_execute` of a handle
/// the gateway did not see handed out, or one let go by `sp_unprepare`, is refused whatever
/// policy says, with an error saying why. The mock hands back handle 7 for the prepexec.
#[test]
fn prepared_handles_are_decided_as_their_statement_and_unknown_handles_fail_closed() {
    let dir = Scratch::new("tds-prepare");
    let tls = tls_files(&dir.0);
    let mock = Mock::start(MockTls::Prelogin, &tls);
    mock.register_with_handle(PREPARED, customers(), 7);
    mock.register(BY_HANDLE, customers());
    let gw = start(&mock, &tls, "mandatory", "");
    let token = gw.gw.token("pipeline-6", &["ci"]);
    let script = format!(
        r#"
from pytds import tds_base
conn = pytds.connect(server="localhost", port=PORT, database="sales", cafile=CA,
                     access_token_callable=lambda: {token:?}, autocommit=True)
cur = conn.cursor()
PREPEXEC = tds_base.InternalProc(tds_base.TDS_SP_PREPEXEC, "sp_prepexec")
UNPREPARE = tds_base.InternalProc(tds_base.TDS_SP_UNPREPARE, "sp_unprepare")
def call(label, proc, params):
    try:
        cur.callproc(proc, params)
        rows = cur.fetchall() if cur.description else []
        outs = cur.get_proc_outputs()
        print(label, "RAN", len(rows), "rows", outs)
        return outs
    except pytds.tds_base.Error as e:
        print(label, "REFUSED", e)
handle = lambda: tds_base.output(value=None, param_type=int)
call("EXEC-UNSEEN", tds_base.SP_EXECUTE, (5,))
call("PREPARE-WRITE", tds_base.SP_PREPARE, (handle(), "", "DELETE FROM customers WHERE id = 2", 1))
h = call("PREPEXEC-READ", PREPEXEC, (handle(), "@N nvarchar(40)", {PREPARED:?}, "Nobody"))[0]
print("HANDLE", h)
call("EXEC-PREPARED", tds_base.SP_EXECUTE, (h, {BY_HANDLE:?}))
call("UNPREPARE", UNPREPARE, (h,))
call("EXEC-AFTER", tds_base.SP_EXECUTE, (h, {BY_HANDLE:?}))
"#
    );
    let before = mock.requests();
    let out = gw.python(&script);
    let t = text(&out);
    assert!(out.status.success(), "{t}\n{}", gw.gw.log_text());
    for line in [
        "EXEC-UNSEEN REFUSED",
        "PREPARE-WRITE REFUSED",
        "PREPEXEC-READ RAN 2 rows",
        "HANDLE 7",
        "EXEC-PREPARED RAN 2 rows",
        "UNPREPARE RAN",
        "EXEC-AFTER REFUSED",
    ] {
        assert!(t.contains(line), "{line}: {t}\n{}", gw.gw.log_text());
    }
    assert!(t.contains("not handed out through the gateway"), "{t}");
    assert_eq!(
        mock.requests() - before,
        3,
        "the prepexec, the execute of its handle and the unprepare reached the target"
    );
    let commands = gw.gw.audit(&["--kind", "command"]);
    let all = |text: &str| -> Vec<serde_json::Value> {
        commands
            .iter()
            .filter(|e| e["statement"].as_str() == Some(text))
            .cloned()
            .collect()
    };
    let verdict = |e: &serde_json::Value| {
        (
            e["verdict"].as_str().map(str::to_owned),
            e["action"].as_str().map(str::to_owned),
        )
    };
    let deny = |action: &str| (Some("deny".to_owned()), Some(action.to_owned()));
    let unseen = all("EXEC sp_execute 5");
    assert_eq!(unseen.len(), 1, "{commands:#?}");
    assert_eq!(verdict(&unseen[0]), deny("sql.unknown"));
    assert_eq!(
        verdict(&all("DELETE FROM customers WHERE id = 2")[0]),
        deny("sql.write")
    );
    // The prepexec and the execute of its handle: both decided as the prepared read.
    let read = all(PREPARED);
    assert_eq!(read.len(), 2, "{commands:#?}");
    for e in &read {
        assert_eq!(verdict(e), (Some("allow".into()), Some("sql.read".into())));
        assert_eq!(e["tables"], serde_json::json!(["customers"]), "{e}");
    }
    let unprepare = all("EXEC sp_unprepare 7");
    assert_eq!(verdict(&unprepare[0]).0.as_deref(), Some("allow"));
    let after = all("EXEC sp_execute 7");
    assert_eq!(after.len(), 1, "{commands:#?}");
    assert_eq!(verdict(&after[0]), deny("sql.unknown"));
}

/// A batch policy sends to review waits in the session: the client is told at once, and once
/// someone in the approvers' group approves, the batch runs and the client gets its answer.
#[test]
fn a_reviewed_batch_is_held_until_approved() {
    let policy = format!(
        "{}\n{}",
        support::tds::POLICY,
        r#"
@id("writes-need-approval")
@approval("1")
@approvers("dba")
permit(principal in Group::"ci", action == Action::"sql.write", resource);
"#
    );
    let dir = Scratch::new("tds-hold");
    let tls = tls_files(&dir.0);
    let mock = Mock::start(MockTls::Prelogin, &tls);
    let gw = support::tds::start_with_policy(&mock, &tls, "mandatory", &policy, "");
    let token = gw.gw.token("pipeline-3", &["ci"]);
    let script = format!(
        r#"
conn = pytds.connect(server="localhost", port=PORT, database="sales", cafile=CA,
                     access_token_callable=lambda: {token:?}, autocommit=True)
cur = conn.cursor()
cur.execute("UPDATE customers SET name = 'x' WHERE id = 1")
print("RAN")
"#
    );
    let child = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sys, pytds\nPORT = {}\nCA = {:?}\n{script}",
            gw.port,
            tls.join("ca.crt").display().to_string()
        ))
        .env("PYTHONPATH", support::root().join("tests/tds/pylib"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the request to appear, then approve it as a DBA.
    let dba = gw.gw.token("dba-1", &["dba"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let id = loop {
        let list = gw.gw.cli(&[
            "approvals",
            "--token",
            &dba,
            "list",
            "--state",
            "pending",
            "--json",
        ]);
        let pending: Vec<serde_json::Value> =
            serde_json::from_str(&list.stdout).unwrap_or_default();
        if let Some(id) = pending.first().and_then(|v| v["id"].as_str()) {
            break id.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no pending approval: {}{}",
            list.stderr,
            gw.gw.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    // Held: what reaches the target now is only what comes after the approval.
    let before = mock.requests();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        mock.requests(),
        before,
        "nothing reached the target while held"
    );
    let vote = gw.gw.cli(&["approvals", "--token", &dba, "approve", &id]);
    assert!(vote.ok, "{}", vote.stderr);
    let out = child.wait_with_output().unwrap();
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("RAN"),
        "{t}\n{}",
        gw.gw.log_text()
    );
    assert_eq!(mock.requests(), before + 1);
    let update = gw
        .gw
        .audit(&["--kind", "command"])
        .into_iter()
        .find(|e| {
            e["statement"]
                .as_str()
                .is_some_and(|s| s.starts_with("UPDATE"))
        })
        .expect("the UPDATE is on record");
    assert_eq!(update["verdict"], "allow");
    assert_eq!(update["approval"], id.as_str());
}

/// A target that answers the login with a routing redirect (Azure SQL's gateway sending the
/// client on to its database's node) is followed by the gateway itself: the client's session
/// runs on the node routed to, and the client never sees the redirect.
#[test]
fn a_routing_redirect_is_followed_by_the_gateway() {
    let dir = Scratch::new("tds-route");
    let tls = tls_files(&dir.0);
    let node = Mock::start(MockTls::Off, &tls);
    let front = Mock::start_redirecting(node.addr);
    let gw = start(&front, &tls, "off", "");
    let key = gw.access_key("pipeline-7", &["ci"]);
    let out = gw.tsql(&key, CUSTOMERS_QUERY);
    let t = text(&out);
    assert!(t.contains("Ada Lovelace"), "{t}\n{}", gw.gw.log_text());
    assert!(
        !front.connections().is_empty(),
        "the gateway logged in to the front"
    );
    assert_eq!(front.requests(), 0, "no batch ran on the redirecting front");
    assert!(node.requests() >= 1, "the batch ran on the node routed to");
    assert!(
        node.connections()
            .iter()
            .any(|c| c.received_server_name.as_deref() == Some("127.0.0.1")),
        "the login to the node names the server routed to: {:?}",
        node.connections()
    );
}
