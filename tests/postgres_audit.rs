//! The Postgres gateway's record, end to end: audit durable before results, the chain and
//! its anchors, kill -9 under load, private state, revocation, sessions and replay.

// Test code: a step that fails fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{Gateway, GatewaySpec, pg};

#[test]
fn audit_is_durable_before_results_reach_the_client_and_verify_detects_tampering() {
    let mut gw = Gateway::start(GatewaySpec::default());
    let token = gw.token("pipeline-7", &["ci"]);
    let r = gw.psql(&token, "SELECT 42 AS answer");
    assert!(r.ok, "{}", r.stderr);
    gw.kill9();
    // The command's event survived SIGKILL.
    let evs = gw.audit(&["--kind", "command"]);
    assert!(evs.iter().any(|e| e["statement"] == "SELECT 42 AS answer"));
    let v = gw.cli(&["audit", "verify"]);
    assert!(v.ok, "intact chain verifies: {}{}", v.stdout, v.stderr);
    assert!(v.stdout.contains("audit chain intact"));

    // Edit one event's statement in the journal archive behind the gateway's back (the
    // store only points into it).
    let journal = gw.scratch.0.join("state/audit-journal");
    let py = format!(
        "import glob\nfor p in glob.glob('{}/seg-*.jsonl'):\n d=open(p,'rb').read(); open(p,'wb').write(d.replace(b'SELECT 42',b'SELECT 41'))",
        journal.display()
    );
    assert!(
        Command::new("python3")
            .args(["-c", &py])
            .status()
            .unwrap()
            .success()
    );
    let v = gw.cli(&["audit", "verify"]);
    assert!(!v.ok, "tampering must be detected");
    assert!(v.stderr.contains("BROKEN"), "{}", v.stderr);

    // Deleting an event (here the first; the command may be the newest) is detected too.
    let py = format!(
        "import glob\np=sorted(glob.glob('{}/seg-*.jsonl'))[0]\nd=open(p,'rb').read(); open(p,'wb').write(d[d.index(b'\\n')+1:])",
        journal.display()
    );
    assert!(
        Command::new("python3")
            .args(["-c", &py])
            .status()
            .unwrap()
            .success()
    );
    assert!(!gw.cli(&["audit", "verify"]).ok);
}

#[test]
fn sessions_are_listed_and_replayed_as_a_transcript() {
    let gw = Gateway::start(GatewaySpec::default());
    let token = gw.token("pipeline-7", &["ci"]);
    assert!(gw.psql(&token, "SELECT count(*) FROM customers").ok);
    assert!(!gw.psql(&token, "DROP TABLE customers").ok);
    let list = gw.cli(&["sessions", "list"]);
    assert!(list.ok, "{}", list.stderr);
    let ids: Vec<String> = list
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert_eq!(ids.len(), 2, "{}", list.stdout);
    assert!(list.stdout.contains("builtin/pipeline-7"));
    let first = gw.cli(&["replay", &ids[0]]);
    assert!(first.ok, "{}", first.stderr);
    assert!(
        first
            .stdout
            .contains("orders=> SELECT count(*) FROM customers"),
        "{}",
        first.stdout
    );
    assert!(first.stdout.contains("1 row"), "{}", first.stdout);
    let second = gw.cli(&["replay", &ids[1]]);
    assert!(
        second.stdout.contains("DENY by [no-ddl]"),
        "{}",
        second.stdout
    );
}

/// Every Postgres command event names who ran it, on which connection and protocol, so a
/// search by connection or identity finds the commands, not only the session boundaries.
#[test]
fn commands_are_found_by_connection_and_identity() {
    let gw = Gateway::start(GatewaySpec::default());
    let token = gw.token("pipeline-7", &["ci"]);
    assert!(gw.psql(&token, "SELECT count(*) FROM customers").ok);
    assert!(!gw.psql(&token, "DROP TABLE customers").ok);
    let other = gw.token("pipeline-8", &["ci"]);
    assert!(gw.psql(&other, "SELECT 2").ok);
    let events = |args: &[&str]| -> Vec<serde_json::Value> {
        let r = gw.cli(&[&["audit", "query", "--json"][..], args].concat());
        assert!(r.ok, "{}", r.stderr);
        r.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let by_connection = events(&["--connection", "orders", "--kind", "command"]);
    let statements: Vec<&str> = by_connection
        .iter()
        .filter_map(|e| e["statement"].as_str())
        .collect();
    assert!(
        statements.contains(&"SELECT count(*) FROM customers")
            && statements.contains(&"DROP TABLE customers")
            && statements.contains(&"SELECT 2"),
        "{statements:?}"
    );
    for e in &by_connection {
        assert_eq!(e["protocol"], "postgres", "{e}");
        assert_eq!(e["connection"], "orders", "{e}");
    }
    let mine = events(&["--identity", "pipeline-7", "--kind", "command"]);
    assert_eq!(mine.len(), 2, "{mine:?}");
    assert!(
        mine.iter()
            .all(|e| e["identity"]["subject"] == "pipeline-7")
    );
    assert_eq!(mine[1]["verdict"], "deny", "{}", mine[1]);
    let ends = events(&["--connection", "orders", "--kind", "command_end"]);
    assert_eq!(ends.len(), 2, "the refused DROP never ran: {ends:?}");
    assert!(ends.iter().all(|e| e["protocol"] == "postgres"));
}

/// The state directory and everything in it (store, journal, keys) is private to the
/// gateway's user, also after someone loosened it; the audit file too.
#[test]
fn the_state_directory_and_audit_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mut gw = Gateway::start(GatewaySpec::default());
    let token = gw.token("pipeline-7", &["ci"]);
    assert!(gw.psql(&token, "SELECT 1").ok);
    let dir = gw.scratch.0.clone();
    let state = dir.join("state");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    fn all(p: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        out.push(p.to_path_buf());
        if p.is_dir() {
            for e in std::fs::read_dir(p).unwrap() {
                all(&e.unwrap().path(), out);
            }
        }
    }
    let check = |what: &str| {
        let mut paths = Vec::new();
        all(&state, &mut paths);
        assert!(paths.len() > 3, "{paths:?}");
        for p in &paths {
            let want = if p.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode(p), want, "{what}: {}", p.display());
        }
        assert_eq!(mode(&dir.join("audit.jsonl")), 0o600, "{what}");
    };
    check("as created");
    // Loosened by hand while stopped: closed again on start.
    gw.kill9();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        state.join("portcullis.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    gw.spawn();
    check("after a restart");
}

/// Verbs that only read the state directory need none of the targets' secrets; `config check`
/// and `serve` still report a missing one.
#[test]
fn cli_verbs_that_do_not_reach_targets_need_no_target_secrets() {
    let gw = Gateway::start(GatewaySpec::default());
    let token = gw.token("pipeline-7", &["ci"]);
    assert!(gw.psql(&token, "SELECT 1").ok);
    let secret = gw.scratch.0.join("orders.password");
    let kept = std::fs::read(&secret).unwrap();
    std::fs::remove_file(&secret).unwrap();
    for args in [
        &["audit", "verify"][..],
        &["sessions", "list"],
        &["audit", "query", "--kind", "command"],
        &["token", "issue", "--sub", "auditor"],
        &[
            "policy",
            "test",
            "--who",
            "x",
            "--group",
            "ci",
            "--connection",
            "orders",
            "--action",
            "sql.read",
        ],
    ] {
        let r = gw.cli(args);
        assert!(r.ok, "{args:?}: {}", r.stderr);
    }
    let r = gw.cli(&["config", "check"]);
    assert!(
        !r.ok && r.stderr.contains("orders.password"),
        "{}",
        r.stderr
    );
    std::fs::write(&secret, kept).unwrap();
}

/// Zero window: no byte of a command reaches PostgreSQL before its audit event is written.
/// Repeated `kill -9` of the gateway under concurrent load (pgbench TPC-B and an insert
/// script), then every committed row has the event of the statement that wrote it, and the
/// chain verifies.
#[test]
fn kill_9_under_load_leaves_no_executed_statement_without_its_event() {
    use std::process::Stdio;
    let mut gw = Gateway::start(GatewaySpec::default());
    let token = gw.token("crash", &["ci"]);
    let init = Command::new("pgbench")
        .args(["-i", "-s", "1", "-q", "-h", "127.0.0.1", "-p"])
        .arg(pg().port.to_string())
        .args(["-U", "app", "orders"])
        .env("PGPASSWORD", &pg().password)
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    pg().admin_sql(
        "DROP TABLE IF EXISTS crash_rows; CREATE TABLE crash_rows (c int, r int); \
         ALTER TABLE crash_rows OWNER TO app",
    );
    let dir = support::Scratch::new("crash");
    let script = dir.0.join("insert.sql");
    std::fs::write(
        &script,
        "\\set r random(1, 2000000000)\nINSERT INTO crash_rows (c, r) VALUES (:client_id, :r);\n",
    )
    .unwrap();
    let bench = |gw: &Gateway, args: &[&str]| {
        Command::new("pgbench")
            .args(["-n", "-T", "10", "-M", "simple", "-h", "127.0.0.1", "-p"])
            .arg(gw.pg_port.to_string())
            .args(["-U", "ci"])
            .args(args)
            .arg("orders")
            .env("PGPASSWORD", &token)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    for round in 0..4u64 {
        let mut tpcb = bench(&gw, &["-c", "2"]);
        let mut insert = bench(&gw, &["-c", "3", "-f", script.to_str().unwrap()]);
        std::thread::sleep(Duration::from_millis(600 + 170 * round));
        gw.kill9();
        let _ = (tpcb.wait(), insert.wait());
        gw.spawn();
    }
    let statements: std::collections::HashSet<String> = gw
        .audit(&["--kind", "command"])
        .into_iter()
        .filter_map(|e| e["statement"].as_str().map(str::to_string))
        .collect();
    let rows = pg().admin_sql("SELECT c || ',' || r FROM crash_rows");
    let rows: Vec<&str> = rows.lines().collect();
    assert!(rows.len() > 100, "the load ran: {} rows", rows.len());
    for row in &rows {
        let (c, r) = row.split_once(',').unwrap();
        let text = format!("INSERT INTO crash_rows (c, r) VALUES ({c}, {r});");
        assert!(
            statements.contains(&text),
            "committed without an event: {text}"
        );
    }
    let history = pg().admin_sql(
        "SELECT tid || ', ' || bid || ', ' || aid || ', ' || delta FROM pgbench_history",
    );
    let history: Vec<&str> = history.lines().collect();
    assert!(history.len() > 20, "TPC-B ran: {} rows", history.len());
    for h in &history {
        let text = format!(
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ({h}, CURRENT_TIMESTAMP);"
        );
        assert!(
            statements.contains(&text),
            "committed without an event: {text}"
        );
    }
    let v = gw.cli(&["audit", "verify"]);
    assert!(v.ok, "{}{}", v.stdout, v.stderr);
}

/// Revoking an access key takes effect in sessions already open with it: within a second
/// every further command is refused, with the reason, and audited.
#[test]
fn revoking_an_access_key_refuses_further_commands_of_live_sessions() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    let gw = Gateway::start(GatewaySpec::default());
    let token = gw.token("pipeline-7", &["ci"]);
    let out = Command::new(support::bin())
        .args(["token", "exchange", "--gateway"])
        .arg(format!("http://127.0.0.1:{}", gw.admin_port))
        .env("PORTCULLIS_TOKEN", &token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let id = format!("ak_{}", key.split('_').nth(1).unwrap());

    let mut psql = gw
        .psql_command(&key, "orders")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = psql.stdin.take().unwrap();
    let mut lines = BufReader::new(psql.stdout.take().unwrap()).lines();
    writeln!(stdin, "SELECT 'before';").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "before");

    let r = gw.cli(&["token", "revoke", &id]);
    assert!(r.ok, "{}", r.stderr);
    std::thread::sleep(Duration::from_millis(1000));
    writeln!(stdin, "SELECT 'after';").unwrap();
    writeln!(stdin, "SELECT 'marker' AS done;").unwrap();
    drop(stdin);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let out = psql.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(rest.is_empty(), "nothing ran after the revoke: {rest:?}");
    assert_eq!(
        stderr.matches("access key was revoked").count(),
        2,
        "{stderr}"
    );
    let refused = gw
        .audit(&["--kind", "command"])
        .into_iter()
        .filter(|e| {
            e["verdict"] == "deny" && e["reason"].as_str().is_some_and(|r| r.contains("revoked"))
        })
        .count();
    assert_eq!(refused, 2);
    // And a new session with it is refused at login.
    let r = gw.psql(&key, "SELECT 1");
    assert!(!r.ok && r.stderr.contains("access key"), "{}", r.stderr);
}

/// Every file under `dir` (recursively) with its length and modification time.
fn tree(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), m.len(), m.modified().unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn anchors_catch_a_cut_tail_and_verify_writes_nothing() {
    let anchors_dir = support::Scratch::new("anchors");
    let anchors = anchors_dir.0.join("anchors.jsonl");
    let extra = format!(
        "anchors = \"{}\"\nanchor_every = \"1s\"\n",
        anchors.display()
    );
    let mut gw = Gateway::start(GatewaySpec {
        extra: &extra,
        ..Default::default()
    });
    let token = gw.token("pipeline-7", &["ci"]);
    for i in 0..3 {
        let r = gw.psql(&token, &format!("SELECT {i} AS n"));
        assert!(r.ok, "{}", r.stderr);
    }
    // While it runs, the head is signed within the interval.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&anchors)
        .unwrap_or_default()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "no anchor within the interval");
        std::thread::sleep(Duration::from_millis(100));
    }
    let v = gw.cli(&["audit", "verify"]);
    assert!(v.ok, "{}{}", v.stdout, v.stderr);
    assert!(v.stdout.contains("audit chain intact"), "{}", v.stdout);
    assert!(v.stdout.contains("anchors match"), "{}", v.stdout);

    // Stopped, the final head is signed; every event, store and journal alike, is counted,
    // and verifying writes nothing.
    gw.stop();
    let state = gw.scratch.0.join("state");
    let before = tree(&state);
    let v = gw.cli(&["audit", "verify"]);
    assert!(v.ok, "{}{}", v.stdout, v.stderr);
    assert_eq!(tree(&state), before, "verify wrote to the state directory");
    let events = gw.audit(&[]).len();
    assert!(
        v.stdout
            .contains(&format!("audit chain intact: {events} events verified")),
        "{} (listed {events})",
        v.stdout
    );
    let last_line = std::fs::read_to_string(&anchors).unwrap();
    let last: serde_json::Value = serde_json::from_str(last_line.lines().last().unwrap()).unwrap();
    assert_eq!(last["seq"].as_u64(), Some(events as u64));

    // Another key's public half does not vouch for these anchors.
    let other = support::Scratch::new("other-key");
    let other_key = other.0.join("k.pub");
    std::fs::write(&other_key, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n").unwrap();
    let v = gw.cli(&[
        "audit",
        "verify",
        "--anchor-key",
        other_key.to_str().unwrap(),
    ]);
    assert!(!v.ok);
    assert!(
        v.stderr.contains("does not verify with the anchor key"),
        "{}",
        v.stderr
    );

    // Cut the newest events out of the index and the archive, as a DELETE and a truncated
    // segment would.
    let db = state.join("portcullis.db");
    let py = format!(
        "import sqlite3, os\nc=sqlite3.connect('{0}')\nloc, off = c.execute('SELECT s.location, b.seg_offset FROM event_blocks b JOIN event_segments s ON s.id = b.segment ORDER BY b.first_seq DESC LIMIT 1').fetchone()\nc.execute('DELETE FROM event_blocks WHERE first_seq = (SELECT max(first_seq) FROM event_blocks)'); c.commit()\nos.truncate(os.path.join('{1}', loc), off)",
        db.display(),
        state.display()
    );
    assert!(
        Command::new("python3")
            .args(["-c", &py])
            .status()
            .unwrap()
            .success()
    );
    let v = gw.cli(&["audit", "verify"]);
    assert!(!v.ok, "a cut tail must not verify: {}", v.stdout);
    assert!(
        v.stderr.contains("BROKEN") && v.stderr.contains("cut from the tail"),
        "{}",
        v.stderr
    );
    // Nor does the gateway go on appending to a chain that lost its tail.
    let refused = gw.spawn_refused();
    assert!(refused.contains("are missing"), "{refused}");
}
