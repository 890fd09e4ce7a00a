//! Permanent bypass suite for the SQL classifier: every case here was, or could be, a way to
//! make a statement look harmless.

use std::sync::Arc;

use super::*;
use crate::action::SqlKind::{self, *};

pub(super) const ON: LexOptions = LexOptions {
    standard_conforming_strings: true,
    dialect: Dialect::Postgres,
};
const OFF: LexOptions = LexOptions {
    standard_conforming_strings: false,
    dialect: Dialect::Postgres,
};

fn kinds(text: &str) -> Vec<SqlKind> {
    classify_uncached(text, ON).iter().map(|s| s.kind).collect()
}

pub(super) fn one(text: &str) -> SqlStatement {
    let mut v = classify_uncached(text, ON);
    assert_eq!(v.len(), 1, "{text:?} -> {v:?}");
    v.remove(0)
}

fn tables(text: &str) -> Vec<String> {
    one(text).tables
}

pub(super) fn fp(text: &str) -> Option<String> {
    fingerprint(text, ON)
}

#[test]
fn pgbench_statements() {
    let s = one("SELECT abalance FROM pgbench_accounts WHERE aid = $1;");
    assert_eq!(
        (s.kind, s.tables.as_slice()),
        (Read, &["pgbench_accounts".to_owned()][..])
    );
    assert_eq!(
        s.shape,
        "select abalance from pgbench_accounts where aid = $1"
    );
    assert!(s.parsed);
    let s = one("UPDATE pgbench_accounts SET abalance = abalance + 10 WHERE aid = 5;");
    assert_eq!((s.kind, s.unbounded), (Write, false));
    assert_eq!(s.tables, ["pgbench_accounts"]);
    assert_eq!(kinds("BEGIN;"), [Session]);
    assert_eq!(kinds("END;"), [Session]);
    let s = one("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) \
         VALUES (1, 2, 3, 4, CURRENT_TIMESTAMP);");
    assert_eq!(
        (s.kind, s.tables.as_slice()),
        (Write, &["pgbench_history".to_owned()][..])
    );
}

#[test]
fn comments_cannot_split_or_hide_keywords() {
    // A comment separates tokens: this is `DR OP TABLE x`, a syntax error.
    let v = classify_uncached("DR/**/OP TABLE x", ON);
    assert_eq!(v.len(), 1);
    assert_eq!((v[0].kind, v[0].parsed), (Unknown, false));
    assert_eq!(kinds("SELECT 1; --\nDROP TABLE t"), [Read, Ddl]);
    assert_eq!(kinds("SELECT 1 /* ; */ ; DROP TABLE t"), [Read, Ddl]);
    assert_eq!(
        kinds("SELECT 1 /* /* ; */ ; */ ; DROP TABLE t"),
        [Read, Ddl]
    );
    assert_eq!(kinds("SELECT 1 -- ; DROP TABLE t"), [Read]);
    // An operator stops where a comment starts: this is `SELECT 1+1`.
    assert_eq!(kinds("SELECT 1+--;\n1; DROP TABLE t"), [Read, Ddl]);
}

#[test]
fn case_whitespace_and_quoting() {
    let s = one("dRoP\ttAbLe\n T");
    assert_eq!((s.kind, s.tables.as_slice()), (Ddl, &["t".to_owned()][..]));
    assert_eq!(s.shape, "drop table t");
    // "DROP" is an identifier, not a keyword.
    let s = one(r#"SELECT * FROM "DROP""#);
    assert_eq!(
        (s.kind, s.tables.as_slice()),
        (Read, &["drop".to_owned()][..])
    );
    assert_eq!(s.shape, r#"select * from "DROP""#);
    assert_eq!(kinds(r#"SELECT "a"";DROP TABLE t;--" FROM x"#), [Read]);
}

#[test]
fn dollar_quotes() {
    assert_eq!(kinds("SELECT $$;DROP TABLE t;$$"), [Read]);
    assert_eq!(kinds("SELECT $a$ $$ $a$; DROP TABLE t"), [Read, Ddl]);
    assert_eq!(kinds("SELECT $a$ $A$; $a$"), [Read]);
    // Identifiers may contain `$`: no dollar quote here, so the DROP is real.
    assert_eq!(
        kinds("SELECT a$b$ FROM t; DROP TABLE t; SELECT $b$"),
        [Unknown]
    );
    assert_eq!(kinds("SELECT a$b$ FROM t; DROP TABLE u"), [Read, Ddl]);
    assert_eq!(
        fp("SELECT a$b$, $1, $tag$x$tag$"),
        Some("select a$b$, $1, ?".into())
    );
    assert_eq!(fp("SELECT $x$ unterminated"), None);
    assert_eq!(fp("SELECT $abc"), None);
    assert_eq!(fp("SELECT $1abc"), None);
}

#[test]
fn string_escapes() {
    assert_eq!(kinds(r"SELECT E'\';DROP TABLE t;--'"), [Read]);
    assert_eq!(kinds(r"SELECT e'\\'; DROP TABLE t"), [Read, Ddl]);
    // standard_conforming_strings on: the backslash is a plain character.
    assert_eq!(kinds(r"SELECT 'a\'; DROP TABLE t; --'"), [Read, Ddl]);
    // Off: the server sees one string; we refuse to guess.
    let off = classify_uncached(r"SELECT 'a\'; DROP TABLE t; --'", OFF);
    assert!(!off.is_empty() && off.iter().all(|s| s.kind == Unknown && !s.parsed));
    assert_eq!(
        fingerprint(r"SELECT 'a\'; DROP TABLE t; --'", OFF),
        Some("select ?".into())
    );
    assert_eq!(
        fingerprint(r"SELECT 'a\'; DROP TABLE t; --'", ON),
        Some("select ?; drop table t;".into())
    );
    // N'' follows the setting; U&'' never treats backslash as a quote escape.
    assert_eq!(
        fingerprint(r"SELECT N'\'; x'", OFF),
        Some("select ?".into())
    );
    assert_eq!(kinds(r"SELECT U&'\'; DROP TABLE t"), [Read, Ddl]);
    assert_eq!(kinds("SELECT 'it''s;'; SELECT 2"), [Read, Read]);
    assert_eq!(
        fp("SELECT B'01', X'1F', N'x', 'a' 'b'"),
        Some("select ?, ?, ?, ? ?".into())
    );
    // Bit strings have no '' escape: B'01''x' is two literals.
    assert_eq!(fp("SELECT B'01''x'"), Some("select ??".into()));
}

#[test]
fn string_continuation_keeps_escape_mode() {
    // PostgreSQL joins strings separated by a newline and lexes the rest as an E-string, so
    // the `\'` below escapes the quote and the DROP is inside the literal.
    let text = "SELECT E'x'\n'\\'; DROP TABLE t; --'";
    assert_eq!(fp(text), Some("select ?".into()));
    assert_eq!(kinds(text), [Read]);
    // Without the newline they are two literals, and the DROP is real.
    assert_eq!(kinds("SELECT E'x' '\\'; DROP TABLE t; --'")[1], Ddl);
    assert_eq!(fp("SELECT 'a' -- c\n  'b'"), Some("select ?".into()));
    assert_eq!(fp("SELECT 'a' /* c */\n'b'"), Some("select ? ?".into()));
    assert_eq!(fp("SELECT 'a' 'b'"), Some("select ? ?".into()));
}

#[test]
fn literal_contents_never_reach_the_parser() {
    // Valid in PostgreSQL, rejected by sqlparser's own E-string unescaping.
    assert_eq!(kinds(r"SELECT E'\xc3\xa9', E'\0'"), [Read]);
    // `t.5` is `t` then `.5` for PostgreSQL; the canonical text keeps them apart.
    assert_eq!(fp("SELECT t.5"), Some("select t?".into()));
}

#[test]
fn unterminated_and_ambiguous_text_is_unknown() {
    for text in [
        "SELECT 'abc",
        "SELECT E'abc\\",
        "SELECT \"abc",
        "SELECT \"\" FROM t",
        "SELECT 1 /* /* */",
        "SELECT 1abc",
        "SELECT 0x1F",
        "SELECT 1_000",
        "SELECT 1e",
        "SELECT 1..2",
        "SELECT 1\x0b",
        "SELECT 1\0; DROP TABLE t",
        "SELECT U&\"a\" FROM t",
    ] {
        let v = classify_uncached(text, ON);
        assert!(!v.is_empty(), "{text:?}");
        assert!(v.iter().all(|s| s.kind == Unknown), "{text:?} -> {v:?}");
    }
    assert_eq!(fp("SELECT 'abc"), None);
    assert_eq!(fp("SELECT 1 /* /* */"), None);
}

#[test]
fn garbage_is_never_read() {
    for text in [
        "hello world",
        "SELEC 1",
        ")))",
        "SELECT FROM WHERE (",
        "💥",
        "??",
    ] {
        let v = classify_uncached(text, ON);
        assert!(!v.is_empty(), "{text:?}");
        assert!(
            v.iter().all(|s| s.kind == Unknown && !s.parsed),
            "{text:?} -> {v:?}"
        );
    }
}

#[test]
fn begin_atomic_bodies_are_not_split() {
    let text = "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END; SELECT 2";
    assert_eq!(kinds(text), [Unknown, Unknown, Unknown]);
}

#[test]
fn empty_statements_produce_nothing() {
    for text in ["", "   ", ";", ";;", "-- c", "/* c */ ; ;", "\n-- x\n;"] {
        assert_eq!(classify_uncached(text, ON), vec![], "{text:?}");
    }
    assert_eq!(kinds("; SELECT 1;; ;"), [Read]);
}

#[test]
fn cte_writes() {
    let s =
        one("WITH a AS (WITH b AS (DELETE FROM t RETURNING *) SELECT * FROM b) SELECT * FROM a");
    assert_eq!(
        (s.kind, s.tables.as_slice()),
        (Write, &["t".to_owned()][..])
    );
    assert!(s.unbounded);
    assert_eq!(
        kinds("WITH x AS (UPDATE t SET a = 1 WHERE b RETURNING a) SELECT * FROM x"),
        [Write]
    );
    assert_eq!(
        kinds("WITH x AS (INSERT INTO t VALUES (1) RETURNING a) SELECT 1"),
        [Write]
    );
}

#[test]
fn cte_names_shadow_tables_only_in_scope() {
    assert_eq!(
        tables("WITH secrets AS (SELECT 1) SELECT * FROM secrets"),
        Vec::<String>::new()
    );
    // A non-recursive CTE body sees the real table of the same name.
    assert_eq!(
        tables("WITH secrets AS (SELECT * FROM secrets) SELECT * FROM secrets"),
        ["secrets"]
    );
    assert_eq!(
        tables("WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a, b"),
        ["b"]
    );
    // The inner WITH does not reach the outer FROM.
    assert_eq!(
        tables("SELECT * FROM secrets, (WITH secrets AS (SELECT 1) SELECT * FROM secrets) x"),
        ["secrets"]
    );
    // Quoted CTE names are case-sensitive, like PostgreSQL.
    assert_eq!(
        tables(r#"WITH "SECRETS" AS (SELECT 1) SELECT * FROM secrets"#),
        ["secrets"]
    );
    // DML targets are always tables.
    let s = one("WITH secrets AS (SELECT 1) DELETE FROM secrets");
    assert_eq!(
        (s.kind, s.tables.as_slice(), s.unbounded),
        (Write, &["secrets".to_owned()][..], true)
    );
    assert_eq!(
        tables("WITH RECURSIVE r AS (SELECT 1 UNION ALL SELECT * FROM r) SELECT * FROM r"),
        Vec::<String>::new()
    );
    // Qualified names never refer to CTEs.
    assert_eq!(
        tables("WITH secrets AS (SELECT 1) SELECT * FROM public.secrets"),
        ["public.secrets", "secrets"]
    );
}

#[test]
fn tables_are_collected_and_normalised() {
    assert_eq!(
        tables(
            "SELECT * FROM Public.Orders o JOIN items i ON o.id = i.oid WHERE x IN (SELECT y FROM z)"
        ),
        ["items", "orders", "public.orders", "z"]
    );
    assert_eq!(tables("SELECT * FROM (SELECT * FROM t) s"), ["t"]);
    assert_eq!(tables("DROP TABLE a, s.b"), ["a", "b", "s.b"]);
    assert_eq!(tables("TRUNCATE t"), ["t"]);
    assert_eq!(tables("CREATE TABLE x AS SELECT * FROM t"), ["t", "x"]);
    assert_eq!(tables("ALTER TABLE t ADD COLUMN c int"), ["t"]);
    assert_eq!(tables("INSERT INTO t SELECT * FROM u"), ["t", "u"]);
    assert_eq!(
        tables("UPDATE t SET a = u.a FROM u WHERE t.id = u.id"),
        ["t", "u"]
    );
    // PostgreSQL keeps the first 63 bytes of a name: so must policy matching.
    let long = "s".repeat(63);
    assert_eq!(tables(&format!("SELECT * FROM {long}_and_more")), [long]);
    let s = one("TABLE public.t");
    assert_eq!(
        (s.kind, s.tables.as_slice()),
        (Read, &["public.t".to_owned(), "t".to_owned()][..])
    );
    // ONLY is a keyword, never the table.
    assert_eq!(tables("SELECT * FROM ONLY secrets"), ["secrets"]);
    assert_eq!(
        tables("SELECT * FROM a, ONLY secrets s WHERE a.x = s.x"),
        ["a", "secrets"]
    );
    let s = one("DELETE FROM ONLY secrets WHERE a = 1");
    assert_eq!(
        (s.kind, s.tables.as_slice()),
        (Write, &["secrets".to_owned()][..])
    );
    assert_eq!(one("UPDATE ONLY secrets SET a = 1").tables, ["secrets"]);
    assert_eq!(one("SELECT * FROM t FETCH FIRST 5 ROWS ONLY").kind, Read);
    assert_eq!(one("BEGIN READ ONLY").kind, Session);
    // sqlparser mis-reads a nested TABLE; it is not trusted.
    assert_eq!(kinds("SELECT 1 UNION TABLE t"), [Unknown]);
}

#[test]
fn unbounded_update_and_delete() {
    assert!(one("UPDATE t SET a = 1").unbounded);
    assert!(!one("UPDATE t SET a = 1 WHERE id = 2").unbounded);
    assert!(one("DELETE FROM t").unbounded);
    assert!(!one("DELETE FROM t WHERE id = 2").unbounded);
    assert!(!one("SELECT * FROM t").unbounded);
}

#[test]
fn explain_select_into_copy() {
    assert_eq!(kinds("EXPLAIN ANALYZE DELETE FROM t"), [Write]);
    assert_eq!(
        kinds("EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET a = 1"),
        [Write]
    );
    assert_eq!(kinds("EXPLAIN (ANALYZE 1) DELETE FROM t"), [Write]);
    assert_eq!(kinds("EXPLAIN (ANALYZE false) DELETE FROM t"), [Read]);
    assert_eq!(kinds("EXPLAIN (ANALYSE) DELETE FROM t"), [Write]);
    assert_ne!(kinds("EXPLAIN ANALYSE DELETE FROM t"), [Read]);
    assert_eq!(
        kinds("EXPLAIN (COSTS off, FORMAT json) DELETE FROM t"),
        [Read]
    );
    assert_eq!(kinds("EXPLAIN (NEW_OPTION) DELETE FROM t"), [Write]);
    assert_eq!(kinds("EXPLAIN DELETE FROM t"), [Read]);
    assert_eq!(kinds("EXPLAIN SELECT pg_read_file('/etc/passwd')"), [Admin]);
    let s = one("SELECT * INTO new FROM t");
    assert_eq!(
        (s.kind, s.tables.as_slice()),
        (Write, &["new".to_owned(), "t".to_owned()][..])
    );
    let s = one("COPY t FROM STDIN");
    assert_eq!(
        (s.kind, s.tables.as_slice()),
        (Write, &["t".to_owned()][..])
    );
    assert_eq!(kinds("COPY t TO PROGRAM 'x'"), [Admin]);
    assert_eq!(kinds("COPY t FROM PROGRAM 'x'"), [Admin]);
    assert_eq!(kinds("COPY t FROM '/etc/passwd'"), [Admin]);
    assert_eq!(kinds("COPY t TO '/tmp/x'"), [Admin]);
    assert_eq!(kinds("COPY (SELECT 1) TO STDOUT"), [Read]);
    assert_eq!(kinds("COPY t TO STDOUT"), [Read]);
}

#[test]
fn session_statements() {
    for text in [
        "BEGIN",
        "START TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "COMMIT",
        "END",
        "ROLLBACK",
        "SAVEPOINT s",
        "RELEASE s",
        "ROLLBACK TO SAVEPOINT s",
        "SET work_mem = '64MB'",
        "SET LOCAL statement_timeout TO 5",
        "SET TIME ZONE 'UTC'",
        "SET escape_string_warning = off",
        "RESET work_mem",
        "DISCARD ALL",
        "DEALLOCATE p",
        "LISTEN ch",
        "UNLISTEN *",
        "CLOSE c",
        "FETCH 10 FROM c",
        "DECLARE c CURSOR FOR SELECT * FROM t",
        "PREPARE p AS SELECT * FROM t WHERE a = $1",
    ] {
        assert_eq!(kinds(text), [Session], "{text}");
    }
    assert_eq!(kinds("SHOW work_mem"), [Read]);
    assert_eq!(kinds("SELECT 1 FROM t FOR UPDATE"), [Read]);
    assert_eq!(kinds("VALUES (1), (2)"), [Read]);
}

#[test]
fn admin_and_write_statements() {
    for text in [
        "DO $$ BEGIN PERFORM 1; END $$",
        "do 'begin null; end'",
        "CALL p()",
        "EXECUTE p(1)",
        "SET ROLE admin",
        "SET LOCAL ROLE admin",
        "RESET ROLE",
        "RESET ALL",
        "SET SESSION AUTHORIZATION 'postgres'",
        "SET search_path TO evil, public",
        "SET standard_conforming_strings = off",
        "SET session_replication_role = replica",
        "SET client_encoding = 'SJIS'",
        "SET NAMES 'SJIS'",
        "GRANT SELECT ON t TO bob",
        "REVOKE SELECT ON t FROM bob",
        "CREATE ROLE bob",
        "ALTER ROLE bob SUPERUSER",
        "DROP ROLE bob",
        "CREATE EXTENSION dblink",
        "VACUUM t",
        "ANALYZE t",
        "CHECKPOINT",
        "CLUSTER t",
        "REINDEX TABLE t",
        "LOAD 'plugin'",
        "ALTER SYSTEM SET work_mem = '1GB'",
    ] {
        assert_eq!(kinds(text), [Admin], "{text}");
    }
    assert_eq!(kinds("PREPARE p AS DELETE FROM t WHERE a = $1"), [Write]);
    assert_eq!(kinds("NOTIFY ch"), [Write]);
    assert_eq!(
        kinds("MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE"),
        [Write]
    );
    assert_eq!(kinds("CREATE INDEX i ON t (a)"), [Ddl]);
    assert_eq!(kinds("COMMENT ON TABLE t IS 'x'"), [Ddl]);
    assert_eq!(kinds("TRUNCATE t"), [Ddl]);
    assert_eq!(kinds("REFRESH MATERIALIZED VIEW v"), [Unknown]);
}

#[test]
fn dangerous_functions_anywhere() {
    for text in [
        "SELECT pg_read_file('/etc/passwd')",
        "select PG_CATALOG.set_config('role','x',false)",
        r#"SELECT "pg_read_file"('/etc/passwd')"#,
        "SELECT lo_import('/x')",
        "SELECT lo_export(1, '/tmp/x')",
        "SELECT * FROM t WHERE pg_terminate_backend(1)",
        "SELECT * FROM pg_ls_dir('.')",
        "SELECT * FROM LATERAL pg_catalog.pg_ls_dir('.') d",
        "SELECT a FROM t WHERE b IN (SELECT pg_cancel_backend(pid) FROM pg_stat_activity)",
        "WITH x AS (SELECT pg_reload_conf()) SELECT * FROM x",
        "SELECT coalesce(NULL, dblink_exec('dbname=x', 'DROP TABLE t'))",
        "SELECT query_to_xml('DELETE FROM t RETURNING 1', true, true, '')",
        "SELECT pg_advisory_lock(1)",
        "SELECT pg_create_logical_replication_slot('s', 'p')",
        "UPDATE t SET a = pg_read_file('x') WHERE id = 1",
    ] {
        assert_eq!(kinds(text), [Admin], "{text}");
    }
    assert_eq!(kinds("SELECT nextval('s')"), [Write]);
    assert_eq!(
        kinds("SELECT pg_sleep(1), txid_current(), now(), count(*) FROM t"),
        [Read]
    );
}

#[test]
fn jsonb_question_operator() {
    let c = Classifier::new(8);
    let op = c.classify("SELECT * FROM t WHERE doc ? 'key'", ON);
    assert_eq!(op[0].kind, Read);
    // Same public fingerprint, but a literal where the operator was: a different cache entry.
    let lit = c.classify("SELECT * FROM t WHERE doc 'x' 'key'", ON);
    assert_eq!(op[0].shape, lit[0].shape);
    assert!(!Arc::ptr_eq(&op, &lit));
    assert_eq!(c.len(), 2);
}

#[test]
fn fingerprints() {
    let a = fp("SELECT abalance FROM pgbench_accounts WHERE aid = 42");
    let b = fp("select  abalance\nFROM pgbench_accounts /* c */ WHERE aid = 7 -- x");
    assert_eq!(a, b);
    assert_eq!(
        a.as_deref(),
        Some("select abalance from pgbench_accounts where aid = ?")
    );
    assert_eq!(fp("SELECT 'x'"), fp("SELECT $q$it's$q$"));
    assert_eq!(fp("SELECT 1.5e3"), fp("SELECT .5"));
    assert_ne!(
        fp("SELECT * FROM t WHERE a = 1"),
        fp("DELETE FROM t WHERE a = 1")
    );
    assert_ne!(fp("DROP TABLE t"), fp("DR/**/OP TABLE t"));
    assert_ne!(fp(r#"SELECT * FROM "T""#), fp("SELECT * FROM T"));
    assert_ne!(fp("COPY t FROM STDIN"), fp("COPY t FROM '/f'"));
    assert_ne!(fp("SELECT $1"), fp("SELECT $2"));
    assert_eq!(fp("SELECT é FROM Ü"), Some("select é from Ü".into()));
}

#[test]
fn cache_hits_share_results() {
    let c = Classifier::new(16);
    let a = c.classify("SELECT abalance FROM pgbench_accounts WHERE aid = 42", ON);
    let b = c.classify("SELECT abalance FROM pgbench_accounts WHERE aid = 7", ON);
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(c.len(), 1);
    // Options are part of the key.
    let d = c.classify("SELECT abalance FROM pgbench_accounts WHERE aid = 7", OFF);
    assert!(!Arc::ptr_eq(&a, &d));
    // A cached shape must not vouch for a backslash text under standard_conforming_strings=off.
    let off = c.classify(
        r"SELECT abalance FROM pgbench_accounts WHERE aid = 'x\'",
        OFF,
    );
    assert!(off.iter().all(|s| s.kind == Unknown));
    // Unscannable text is not cached but still classified.
    let bad = c.classify("SELECT 'oops", ON);
    assert_eq!(bad.len(), 1);
    assert_eq!((bad[0].kind, bad[0].parsed), (Unknown, false));
    assert_eq!(c.len(), 2);
}

#[test]
fn classifier_is_shareable() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Classifier>();
}

#[test]
fn cache_is_bounded() {
    let c = Classifier::new(3);
    for i in 0..20 {
        let text = format!("SELECT c{i} FROM t");
        assert_eq!(c.classify(&text, ON)[0].kind, Read);
        assert!(c.len() <= 3);
    }
    // A hot entry survives the sweep.
    let hot = c.classify("SELECT hot FROM t", ON);
    for i in 0..10 {
        assert!(Arc::ptr_eq(&hot, &c.classify("SELECT hot FROM t", ON)));
        c.classify(&format!("SELECT d{i} FROM t"), ON);
    }
    let none = Classifier::new(0);
    none.classify("SELECT 1", ON);
    assert!(none.is_empty());
}
