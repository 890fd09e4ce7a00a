//! Result masking through the Postgres gateway, end to end: a real PostgreSQL seeded with
//! `tests/fixtures/customers_pii.sql`, the real `portcullis` binary with a `[[masking]]` block,
//! and real clients (psql, pgbench, tokio-postgres in binary format). Every leak attempt that
//! was tried against the gateway is a test here.

// Test code: a step that fails fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;

use support::masking::{assert_no_originals, command_end, gateway, leak_attempt};

#[test]
fn psql_select_masks_every_sensitive_value_and_keeps_the_rest() {
    let gw = gateway();
    let token = gw.token("analyst", &["ci"]);
    let out = leak_attempt(&gw, &token, "SELECT * FROM customers_pii ORDER BY id");
    for masked in [
        "[REDACTED:email]",
        "[REDACTED:card]",
        "[REDACTED:column]",
        "[REDACTED:iban]",
        "[REDACTED:secret]",
        "[REDACTED:ssn]",
    ] {
        assert!(out.contains(masked), "{masked} missing in:\n{out}");
    }
    // Harmless values pass untouched, typed columns too.
    for kept in [
        "Ada Lovelace",
        "Walk-in customer",
        "paid cash, no details kept",
        "order ORD-2024-000123 shipped",
        "1520.75",
        "2023-05-01",
        "AccountName=adastore",
    ] {
        assert!(out.contains(kept), "{kept} missing in:\n{out}");
    }
    assert_eq!(out.lines().count(), 5, "{out}");
    // The hash key was created on first start, owner-only.
    use std::os::unix::fs::PermissionsExt;
    let key = gw.scratch.0.join("state/masking.key");
    let meta = std::fs::metadata(&key).expect("masking.key");
    assert_eq!(meta.len(), 32);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}

#[test]
fn an_unmasked_group_sees_the_original_values() {
    let gw = gateway();
    let token = gw.token("dpo-officer", &["ci", "dpo"]);
    let r = gw.psql(
        &token,
        "SELECT email, card, ssn FROM customers_pii WHERE id = 1",
    );
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(
        r.stdout.trim(),
        "ada.lovelace@example.com|4111 1111 1111 1111|078051120"
    );
}

#[test]
fn audit_counts_match_the_values_masked() {
    let gw = gateway();
    let token = gw.token("analyst", &["ci"]);
    let sql = "SELECT email, card, ssn FROM customers_pii ORDER BY id";
    let out = leak_attempt(&gw, &token, sql);
    let masked_cells = out
        .lines()
        .flat_map(|l| l.split('|'))
        .filter(|c| c.contains("[REDACTED"))
        .count();
    assert_eq!(masked_cells, 10, "{out}");
    let end = command_end(&gw, sql);
    let m = &end["detail"]["masked"];
    assert_eq!(m["values"], 10, "{end}");
    assert_eq!(m["email"], 4, "{end}");
    assert_eq!(m["card"], 3, "{end}");
    assert_eq!(m["column:customers_pii.ssn"], 3, "{end}");
    // Counts only: no value reaches the audit trail.
    assert_no_originals("audit event", &end.to_string());
    assert_eq!(end["rows"], 5);
}

#[test]
fn a_statement_with_nothing_sensitive_has_no_masking_detail() {
    let gw = gateway();
    let token = gw.token("analyst", &["ci"]);
    let sql = "SELECT id, name, balance FROM customers_pii ORDER BY id";
    let out = leak_attempt(&gw, &token, sql);
    assert!(out.contains("Ada Lovelace|1520.75"), "{out}");
    let end = command_end(&gw, sql);
    assert!(end["detail"].is_null(), "{end}");
}

#[test]
fn pgbench_custom_script_is_masked_in_every_protocol_mode() {
    let gw = gateway();
    let token = gw.token("bench", &["ci"]);
    let dir = support::Scratch::new("maskbench");
    let script = dir.0.join("pii.sql");
    std::fs::write(
        &script,
        "\\set id random(1, 3)\nSELECT name, email, card, ssn FROM customers_pii WHERE id = :id;\n",
    )
    .unwrap();
    for mode in ["simple", "extended", "prepared"] {
        let r = gw.pgbench(
            &token,
            &[
                "-n",
                "-c",
                "2",
                "-t",
                "20",
                "-M",
                mode,
                "-f",
                script.to_str().unwrap(),
            ],
        );
        assert!(r.ok, "pgbench -M {mode}: {}{}", r.stdout, r.stderr);
        assert!(
            r.stdout
                .contains("number of transactions actually processed: 40/40"),
            "{mode}: {}",
            r.stdout
        );
    }
    // Every execution (rows 1-3 all hold an e-mail, a card and an SSN) was masked per
    // column: the e-mail and card by detectors, the SSN by its rule.
    // A command's end is written just after its results are released: wait for the last.
    let masked = |events: &[serde_json::Value]| {
        events
            .iter()
            .filter(|e| !e["detail"]["masked"].is_null())
            .cloned()
            .collect::<Vec<_>>()
    };
    let ends = masked(&gw.audit_until(&["--kind", "command_end"], |events| {
        masked(events).len() >= 120
    }));
    assert_eq!(ends.len(), 120, "one masked command_end per execution");
    for e in &ends {
        let m = &e["detail"]["masked"];
        assert_eq!(m["email"], 1, "{e}");
        assert_eq!(m["card"], 1, "{e}");
        assert_eq!(m["column:customers_pii.ssn"], 1, "{e}");
        assert_eq!(m["values"], 3, "{e}");
    }
}

#[test]
fn binary_format_client_gets_masked_values() {
    let gw = gateway();
    let token = gw.token("app", &["ci"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(gw.pg_port)
            .user("ci")
            .dbname("orders")
            .password(token.as_str())
            .connect(tokio_postgres::NoTls)
            .await
            .expect("connect through the gateway");
        tokio::spawn(conn);
        // Prepared (Parse + Describe statement), then Bind with binary results + Execute.
        let rows = client
            .query(
                "SELECT id, name, email, card, ssn, notes FROM customers_pii WHERE id <= $1 ORDER BY id",
                &[&3i32],
            )
            .await
            .expect("query");
        assert_eq!(rows.len(), 3);
        let mut all = String::new();
        for r in &rows {
            let id: i32 = r.get(0);
            let name: &str = r.get(1);
            let email: &str = r.get(2);
            let card: &str = r.get(3);
            let ssn: &str = r.get(4);
            let notes: &str = r.get(5);
            assert!((1..=3).contains(&id));
            assert!(!name.contains("REDACTED"), "{name}");
            assert_eq!(email, "[REDACTED:email]");
            assert_eq!(card, "[REDACTED:card]");
            assert_eq!(ssn, "[REDACTED:column]");
            all.push_str(&format!("{id} {name} {email} {card} {ssn} {notes}\n"));
        }
        assert_no_originals("binary rows", &all);
        // The statement is prepared once and executed again: still planned.
        let again = client
            .query(
                "SELECT id, name, email, card, ssn, notes FROM customers_pii WHERE id <= $1 ORDER BY id",
                &[&1i32],
            )
            .await
            .unwrap();
        assert_eq!(again[0].get::<_, &str>(2), "[REDACTED:email]");
        // A covered column cast to a binary integer can't hold a replacement: NULL.
        let n: Option<i64> = client
            .query_one("SELECT ssn::bigint FROM customers_pii WHERE id = 1", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, None);
        // An array of text in binary format is decoded and each element masked.
        let emails: Option<Vec<Option<String>>> = client
            .query_one("SELECT array_agg(email ORDER BY id) FROM customers_pii", &[])
            .await
            .unwrap()
            .get(0);
        let e = Some("[REDACTED:email]".to_string());
        assert_eq!(emails, Some(vec![e.clone(), e.clone(), e.clone(), None, e]));
        // Harmless binary values are untouched.
        let balance: String = client
            .query_one("SELECT balance::text FROM customers_pii WHERE id = 1", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(balance, "1520.75");
        // The simple protocol (text format) through the same client.
        let msgs = client
            .simple_query("SELECT email FROM customers_pii WHERE id = 2")
            .await
            .unwrap();
        let got: Vec<String> = msgs
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(String::from),
                _ => None,
            })
            .collect();
        assert_eq!(got, vec!["[REDACTED:email]".to_string()]);
    });
}

#[test]
fn copy_to_stdout_text_is_masked_per_field() {
    let gw = gateway();
    let token = gw.token("analyst", &["ci"]);
    let out = leak_attempt(&gw, &token, "COPY customers_pii TO STDOUT");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    let first: Vec<&str> = lines[0].split('\t').collect();
    assert_eq!(first.len(), 11, "{out}");
    assert_eq!(first[1], "Ada Lovelace");
    assert_eq!(first[2], "[REDACTED:email]");
    assert_eq!(first[3], "[REDACTED:card]");
    assert_eq!(first[4], "[REDACTED:column]");
    assert_eq!(first[5], "[REDACTED:iban]");
    assert_eq!(first[9], "1520.75");
    // NULLs stay NULL.
    assert!(lines[3].contains("\\N"), "{out}");
    // Named columns: the rule applies to the column, whatever its content.
    let out = leak_attempt(&gw, &token, "COPY customers_pii (id, ssn) TO STDOUT");
    assert!(out.starts_with("1\t[REDACTED:column]\n"), "{out}");
    let sql = "COPY customers_pii (id, email) TO STDOUT";
    leak_attempt(&gw, &token, sql);
    assert_eq!(command_end(&gw, sql)["detail"]["masked"]["email"], 4);
}

#[test]
fn copy_to_stdout_csv_is_masked_with_quoting_kept_valid() {
    let gw = gateway();
    let token = gw.token("analyst", &["ci"]);
    let out = leak_attempt(
        &gw,
        &token,
        "COPY (SELECT id, email, ssn, notes FROM customers_pii ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "id,email,ssn,notes", "the header is kept");
    assert!(
        lines[1].starts_with("1,\"[REDACTED:email]\",\"[REDACTED:column]\","),
        "{out}"
    );
    // The note with a card keeps its text, and stays one quoted CSV field.
    assert!(
        lines[1].ends_with("\"VIP; called about card [REDACTED:card] on 2024-03-02\""),
        "{out}"
    );
    assert_eq!(lines[4], "4,,,\"paid cash, no details kept\"", "{out}");
}

/// Every spelling of COPY's options is read as PostgreSQL reads it, so the column rule holds
/// and only covered fields are masked (asyncpg quotes the format: `(FORMAT 'csv')`).
#[test]
fn copy_options_in_every_spelling_keep_the_column_rule() {
    let gw = gateway();
    let token = gw.token("analyst", &["ci"]);
    for sql in [
        "COPY customers_pii TO STDOUT (FORMAT 'csv')",
        "COPY customers_pii TO STDOUT (FORMAT \"csv\")",
        "COPY customers_pii TO STDOUT WITH CSV",
        "COPY customers_pii TO STDOUT (FORMAT 'csv', HEADER false)",
    ] {
        let out = leak_attempt(&gw, &token, sql);
        let first = out.lines().next().unwrap_or_default();
        assert!(first.starts_with("1,Ada Lovelace,"), "{sql}: {out}");
        assert!(first.contains("[REDACTED:column]"), "{sql}: {out}");
    }
    let sql = "COPY customers_pii (id, ssn) TO STDOUT (FORMAT 'text')";
    let out = leak_attempt(&gw, &token, sql);
    assert!(
        out.starts_with("1\t[REDACTED:column]\n2\t"),
        "ids are kept: {out}"
    );
}

#[test]
fn binary_copy_is_masked_when_masking_applies() {
    let gw = gateway();
    let token = gw.token("analyst", &["ci"]);
    // Masked field by field.
    for sql in [
        "COPY customers_pii TO STDOUT (FORMAT binary)",
        "COPY (SELECT id, email, ssn FROM customers_pii) TO STDOUT WITH BINARY",
    ] {
        let out = Command::new("psql")
            .args(["-X", "-At", "-h", "127.0.0.1", "-p"])
            .arg(gw.pg_port.to_string())
            .args(["-U", "ci", "-d", "orders", "-c"])
            .arg(sql)
            .args(["-c", "SELECT 'still connected'"])
            .env("PGPASSWORD", &token)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{sql}: {stderr}");
        assert!(stdout.contains("PGCOPY"), "{sql}: {stdout}");
        assert!(stdout.contains("[REDACTED:column]"), "{sql}: {stdout}");
        assert!(stdout.contains("[REDACTED:email]"), "{sql}: {stdout}");
        assert!(stdout.contains("still connected"), "{stdout} {stderr}");
        assert_no_originals("binary copy", &format!("{stdout}{stderr}"));
    }
    let end = command_end(&gw, "COPY customers_pii TO STDOUT (FORMAT binary)");
    assert_eq!(
        end["detail"]["masked"]["column:customers_pii.ssn"], 3,
        "{end}"
    );
    // Inside a multi-statement query the gateway can't tell which columns are copied: that
    // COPY alone is refused as it starts, and the session goes on.
    let out = Command::new("psql")
        .args(["-X", "-At", "-h", "127.0.0.1", "-p"])
        .arg(gw.pg_port.to_string())
        .args(["-U", "ci", "-d", "orders", "-c"])
        .arg("SELECT 'first'; COPY customers_pii TO STDOUT BINARY")
        .args(["-c", "SELECT 'still connected'"])
        .env("PGPASSWORD", &token)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("binary COPY is refused"), "{stderr}");
    assert!(stdout.contains("still connected"), "{stdout} {stderr}");
    assert_no_originals("binary copy", &format!("{stdout}{stderr}"));
}

#[test]
fn unique_violation_detail_does_not_echo_the_value() {
    let gw = gateway();
    let token = gw.token("writer", &["ci"]);
    let r = gw.psql(
        &token,
        "INSERT INTO customers_pii (name, email) VALUES ('dup', 'ada.lovelace@example.com')",
    );
    assert!(!r.ok);
    assert!(r.stderr.contains("duplicate key"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("Key (email)=([REDACTED:email]) already exists"),
        "{}",
        r.stderr
    );
    assert_no_originals("unique violation", &r.stderr);
    // An error message that quotes a value: masked for the client and in the audit trail.
    let sql = "SELECT 'card 4111 1111 1111 1111'::int";
    let r = gw.psql(&token, sql);
    assert!(!r.ok);
    // (psql itself quotes the statement it sent after `LINE 1:`; the server's message is
    // the ERROR line.)
    let error_line = r.stderr.lines().find(|l| l.starts_with("ERROR:")).unwrap();
    assert!(error_line.contains("[REDACTED:card]"), "{}", r.stderr);
    assert_no_originals("error message", error_line);
    let end = command_end(&gw, sql);
    assert!(
        end["error"].as_str().unwrap().contains("[REDACTED:card]"),
        "{end}"
    );
}

#[test]
fn config_check_names_each_bad_masking_key() {
    let dir = support::Scratch::new("mask-cfg");
    let cfg = dir.0.join("bad.toml");
    std::fs::write(dir.0.join("p.cedar"), "").unwrap();
    std::fs::write(
        &cfg,
        "[gateway]\nstate_dir='s'\npolicy='p.cedar'\n\
         [[connections]]\nname='orders'\nprotocol='postgres'\ntarget='127.0.0.1:5432'\nuser='app'\n\
         [[masking]]\nconnections=['orders','nope']\ndetectors=['card','cardz']\ncolumns=['a.b.c.d']\n\
         [[masking]]\nconnections=['orders']\ndetectors=['email']\nbogus=1\n",
    )
    .unwrap();
    let out = Command::new(support::bin())
        .args(["config", "check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("bogus"), "{err}");
    std::fs::write(
        &cfg,
        "[gateway]\nstate_dir='s'\npolicy='p.cedar'\n\
         [[connections]]\nname='orders'\nprotocol='postgres'\ntarget='127.0.0.1:5432'\nuser='app'\n\
         [[masking]]\nconnections=['orders','nope']\ndetectors=['card','cardz']\ncolumns=['a.b.c.d']\n",
    )
    .unwrap();
    let out = Command::new(support::bin())
        .args(["config", "check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("masking[0].connections[1]"), "{err}");
    assert!(
        err.contains("masking[0].detectors[1]: unknown detector `cardz`"),
        "{err}"
    );
    assert!(err.contains("masking[0].columns[0]"), "{err}");
}
