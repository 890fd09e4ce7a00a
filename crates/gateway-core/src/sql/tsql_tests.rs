//! T-SQL classification: kinds of each class, batches without `;`, lexical traps, names,
//! bounds, and the separation of the two dialects.

use super::*;
use crate::action::SqlKind::{self, *};

const TSQL: LexOptions = LexOptions {
    standard_conforming_strings: true,
    dialect: Dialect::TSql,
};

fn all(text: &str) -> Vec<SqlStatement> {
    classify_uncached(text, TSQL)
}

fn kinds(text: &str) -> Vec<SqlKind> {
    all(text).iter().map(|s| s.kind).collect()
}

fn one(text: &str) -> SqlStatement {
    let mut v = all(text);
    assert_eq!(v.len(), 1, "{text:?} -> {v:?}");
    v.remove(0)
}

fn kind(text: &str) -> SqlKind {
    one(text).kind
}

fn tables(text: &str) -> Vec<String> {
    one(text).tables
}

/// Unknown, and never analysed: the scanner gave up or sqlparser could not read the batch.
fn assert_unknown(text: &str) {
    let v = all(text);
    assert!(!v.is_empty(), "{text:?}");
    assert!(
        v.iter().all(|s| s.kind == Unknown && !s.parsed),
        "{text:?} -> {v:?}"
    );
}

#[test]
fn reads() {
    for text in [
        "select 1",
        "SELECT a, b FROM dbo.t WHERE a = @p1",
        "select top 10 * from t with (nolock) where a = 1 order by b",
        "select * from t order by a offset 0 rows fetch next 5 rows only",
        "with c as (select a from t) select * from c",
        "select a from t union all select a from u",
        "select * from t where a in (select a from u)",
    ] {
        let s = one(text);
        assert_eq!(
            (s.kind, s.parsed, s.unbounded),
            (Read, true, false),
            "{text}"
        );
    }
    assert_eq!(tables("with c as (select a from t) select * from c"), ["t"]);
    assert_eq!(
        tables("select a from t union all select a from u"),
        ["t", "u"]
    );
}

#[test]
fn writes_and_unbounded() {
    let s = one("insert into dbo.orders (a, b) values (1, N'x'), (2, 'y')");
    assert_eq!((s.kind, s.unbounded), (Write, false));
    assert_eq!(s.tables, ["dbo.orders", "orders"]);
    let s = one("update t set a = 1");
    assert_eq!((s.kind, s.unbounded), (Write, true));
    let s = one("update t set a = 1 where id = 5");
    assert_eq!((s.kind, s.unbounded), (Write, false));
    let s = one("delete from t");
    assert_eq!((s.kind, s.unbounded), (Write, true));
    let s = one("delete from t where id = 5");
    assert_eq!((s.kind, s.unbounded), (Write, false));
    let s = one("merge into t using s on t.a = s.a when matched then delete;");
    assert_eq!(
        (s.kind, s.tables.as_slice()),
        (Write, &["s".to_owned(), "t".to_owned()][..])
    );
    // SELECT INTO creates and fills a table, a temporary one too.
    let s = one("select * into #t from orders");
    assert_eq!(s.kind, Write);
    assert_eq!(s.tables, ["#t", "orders"]);
    let s = one("select a into dbo.copy from t");
    assert_eq!((s.kind, s.tables.len()), (Write, 3));
}

#[test]
fn ddl() {
    for text in [
        "create table dbo.t (a int primary key, b nvarchar(10))",
        "create table #t (a int)",
        "create view v as select 1 a",
        "create index i on t (a)",
        "create schema s",
        "alter table t add c int",
        "drop table if exists t",
        "drop view v",
        "truncate table t",
    ] {
        assert_eq!(kind(text), Ddl, "{text}");
    }
    assert_eq!(tables("drop table dbo.t"), ["dbo.t", "t"]);
    assert_eq!(tables("truncate table t"), ["t"]);
}

#[test]
fn admin_statements() {
    for text in [
        "grant select on t to u",
        "revoke select on t from u",
        "deny select on t to u",
        "create role r",
        "alter role r add member u",
        "create database d",
        "drop database d",
        "drop user u",
        "kill 52",
        "use master",
        "raiserror('x', 16, 1) with log",
        "reconfigure",
        "reconfigure with override",
        "shutdown with nowait",
        "dbcc freeproccache",
        "dbcc checkdb (mydb, noindex) with no_infomsgs, all_errormsgs",
    ] {
        let s = one(text);
        assert_eq!((s.kind, s.parsed), (Admin, true), "{text}");
    }
}

#[test]
fn exec_of_anything_is_admin() {
    for text in [
        "exec p",
        "exec dbo.p 1, 'a'",
        "execute dbo.p @a = 1",
        "exec sp_executesql N'select 1'",
        "exec sp_executesql N'select * from t where a = @a', N'@a int', @a = 1",
        "exec xp_cmdshell 'dir'",
        "exec sp_configure 'show advanced options', 1",
        "execute ('select 1')",
        "exec (N'drop table t')",
    ] {
        assert_eq!(kind(text), Admin, "{text}");
    }
    // Forms sqlparser cannot read are unknown, never read.
    assert_unknown("exec @r = p");
    assert_unknown("insert into t exec p");
}

#[test]
fn external_data_is_admin() {
    for text in [
        "select * from openquery(srv, 'select 1')",
        "select * from openrowset('SQLNCLI', 'Server=x', 'select 1')",
        // A four-part name reads through a linked server.
        "select * from srv.db.dbo.t",
    ] {
        assert_eq!(kind(text), Admin, "{text}");
    }
    // Forms sqlparser cannot read are unknown, which ranks above admin.
    assert_unknown("select * from openrowset(bulk 'c:\\x.txt', single_clob) as f");
    assert_unknown("select * from opendatasource('SQLNCLI', 'Data Source=x').db.dbo.t");
}

#[test]
fn session_statements() {
    for text in [
        "set nocount on",
        "SET XACT_ABORT ON",
        "set ansi_nulls on",
        "set quoted_identifier on",
        "set transaction isolation level read committed",
        "set lock_timeout 1000",
        "set dateformat dmy",
        "set language us_english",
        "set deadlock_priority low",
        "set rowcount 0",
        "set textsize 2147483647",
        "set statistics io on",
        "declare @v int = 0, @w nvarchar(10)",
        "set @v = 1",
        "begin tran",
        "begin transaction t1",
        "commit tran t1",
        "rollback tran @name",
        "commit tran",
        "commit",
        "rollback transaction",
        "save tran s1",
        "save transaction",
        "print 'x'",
        "waitfor delay '00:00:01'",
        "throw 50000, 'x', 1",
        "raiserror('x', 16, 1)",
        "return",
        "open c",
        "fetch next from c into @a",
        "close c",
        "deallocate c",
    ] {
        let s = one(text);
        assert_eq!((s.kind, s.parsed), (Session, true), "{text}");
    }
}

#[test]
fn set_options_that_change_meaning_are_admin_unknown_ones_unknown() {
    // OFF makes "..." a string for the rest of the batch and later ones.
    assert_eq!(kind("set quoted_identifier off"), Admin);
    assert_eq!(kind("set ansi_defaults off"), Admin);
    assert_eq!(kind("set ansi_defaults on"), Session);
    assert_eq!(kind("set context_info 0x01"), Admin);
    assert_eq!(kind("set identity_insert dbo.t on"), Admin);
    assert_eq!(kind("set some_future_option on"), Unknown);
    // One admin option in a list makes the statement admin.
    assert_eq!(kind("set nocount, quoted_identifier off"), Admin);
}

#[test]
fn variables_take_the_kind_of_their_expression() {
    let s = one("set @n = (select count(*) from t)");
    assert_eq!(
        (s.kind, s.tables.as_slice()),
        (Session, &["t".to_owned()][..])
    );
    let s = one("set @n = dbo.f(1)");
    assert_eq!(
        (s.kind, s.functions.as_slice()),
        (Call, &["dbo.f".to_owned()][..])
    );
    let s = one("declare @n int = (select max(a) from t)");
    assert_eq!(
        (s.kind, s.tables.as_slice()),
        (Session, &["t".to_owned()][..])
    );
    let s = one("declare c cursor for select a from secrets");
    assert_eq!(
        (s.kind, s.tables.as_slice()),
        (Session, &["secrets".to_owned()][..])
    );
}

#[test]
fn statements_need_no_semicolon() {
    let v = all("select 1 delete from t");
    assert_eq!(v.iter().map(|s| s.kind).collect::<Vec<_>>(), [Read, Write]);
    assert!(v[1].unbounded);
    assert_eq!(
        (v[0].shape.as_str(), v[1].shape.as_str()),
        ("select ?", "delete from t")
    );
    let v = all("select a from t\nselect b from u\nupdate u set b = 1 where a = 2");
    assert_eq!(
        v.iter().map(|s| s.kind).collect::<Vec<_>>(),
        [Read, Read, Write]
    );
    assert_eq!(v[1].tables, ["u"]);
    assert_eq!(v[2].shape, "update u set b = ? where a = ?");
    assert_eq!(
        kinds("set nocount on; insert into t values (1) select scope_identity()"),
        [Session, Write, Read]
    );
    assert_eq!(kinds("select 1;;select 2;"), [Read, Read]);
    assert_eq!(kinds(";with c as (select 1 a) select a from c"), [Read]);
    assert!(all("").is_empty() && all(" ;; -- x\n").is_empty());
    // `GO` mid-line is an ordinary name: here a column alias, as the server reads it.
    assert_eq!(kinds("select 1 go"), [Read]);
}

#[test]
fn blocks_take_their_worst_inner_statement() {
    let s = one("IF @x = 1 BEGIN DELETE FROM t; SELECT 1; END ELSE SELECT 2");
    assert_eq!(
        (s.kind, s.unbounded, s.tables.as_slice()),
        (Write, true, &["t".to_owned()][..])
    );
    assert_eq!(
        s.shape,
        "if @x = ? begin delete from t; select ?; end else select ?"
    );
    let s = one("if exists (select 1 from t where a = 1) drop table t");
    assert_eq!(s.kind, Ddl);
    let s = one("begin select a from t; exec p; end");
    assert_eq!(s.kind, Admin);
    // TRY and CATCH markers are blocks; what runs inside them counts.
    let v = all(
        "begin try delete from t where a = 1 end try begin catch select error_message() end catch",
    );
    assert_eq!(v.iter().map(|s| s.kind).max(), Some(Write));
    assert!(v.iter().all(|s| s.parsed));
    assert_eq!(v[1].shape, "delete from t where a = ?");
    let s = one("while @i < 10 begin set @i = @i + 1; delete from t where id = @i; end");
    assert_eq!(s.kind, Write);
    // A procedure body is only stored, but what it would run still counts.
    assert_eq!(kind("create procedure p as begin select 1; end"), Ddl);
    assert_eq!(
        kind("create procedure p as begin exec xp_cmdshell 'dir'; end"),
        Admin
    );
}

#[test]
fn unreadable_text_is_unknown_never_read() {
    // sqlparser cannot read these: the whole batch is unknown, its readable parts too.
    for text in [
        "bulk insert t from 'f'",
        "backup database d to disk = 'f'",
        "create login x with password = 'y'",
        "select 1; create login x with password = 'y'",
        "select 1 bulk insert t from 'f'",
        "select next value for s",
        // DBCC is only recognised when nothing else shares its part of the batch.
        "dbcc checkdb select * from secrets",
        "dbcc checkdb ((select 1))",
        "save tran a b",
        "select 1 + ",
    ] {
        assert_unknown(text);
    }
    assert_eq!(kinds("reconfigure; select * from t"), [Admin, Read]);
}

#[test]
fn comments_and_strings_hide_nothing() {
    assert_eq!(kinds("select '; drop table t'"), [Read]);
    assert_eq!(kinds("select N'x'' ; drop table t'"), [Read]);
    assert_eq!(kinds("select 'it''s' -- ; drop table t"), [Read]);
    assert_eq!(kinds("select 1 /* nested /* */ drop table t */"), [Read]);
    assert_eq!(
        kinds("select 1 /* a */ /* b /* c */ d */ delete from t"),
        [Read, Write]
    );
    assert_eq!(kinds("select 1 --x\r\ndrop table t"), [Read, Ddl]);
    assert_eq!(kinds("select 1 --x\ndrop table t"), [Read, Ddl]);
    // A string may span lines; backslashes are ordinary characters.
    assert_eq!(kinds("select 'a\\'\n; drop table t"), [Read, Ddl]);
    assert_eq!(kinds("select 'a\nb' from t"), [Read]);
    // A nested comment left open, like any unterminated construct, gives up.
    for text in [
        "select 1 /* nested /* */ drop table t",
        "select 'abc",
        "select N'abc''",
        "select [abc",
        "select \"abc",
        "select 1 /*",
    ] {
        assert_unknown(text);
    }
    // Whether a lone carriage return ends a `--` comment is not certain.
    assert_unknown("select 1 --x\rdrop table t");
}

#[test]
fn quoted_identifiers() {
    let s = one("select [a]]b], \"c\"\"d\" from [dbo].[My Table]");
    assert_eq!(s.kind, Read);
    assert_eq!(s.tables, ["dbo.my table", "my table"]);
    assert_eq!(s.shape, "select [a]]b], \"c\"\"d\" from [dbo].[My Table]");
    // Keywords in brackets are names.
    assert_eq!(tables("select * from [drop table t]"), ["drop table t"]);
    assert_eq!(tables("select * from \"S\".\"T\""), ["s.t", "t"]);
    assert_eq!(kind("delete from [t]] ; drop table x]"), Write);
    assert_unknown("select [] from t");
    assert_unknown("select \"\" from t");
    // Non-ASCII is fine inside literals and quoted identifiers, refused in bare names.
    assert_eq!(tables("select N'café' from [tâble]"), ["tâble"]);
    assert_unknown("select café from t");
}

#[test]
fn variables_and_temporary_tables() {
    let s = one("select @@rowcount, @v from #t join ##g on 1 = 1");
    assert_eq!(
        (s.kind, s.tables.as_slice()),
        (Read, &["##g".to_owned(), "#t".to_owned()][..])
    );
    assert_eq!(s.shape, "select @@rowcount, @v from #t join ##g on ? = ?");
    let s = one("insert into #T values (1)");
    assert_eq!(
        (s.kind, s.tables.as_slice()),
        (Write, &["#t".to_owned()][..])
    );
    assert_unknown("select @ from t");
    assert_unknown("select # from t");
}

#[test]
fn qualified_names_add_each_suffix() {
    assert_eq!(
        tables("select * from DB.dbo.Orders"),
        ["db.dbo.orders", "dbo.orders", "orders"]
    );
    assert_eq!(
        tables("select * from [DB].[dbo].[Orders]"),
        ["db.dbo.orders", "dbo.orders", "orders"]
    );
    assert_eq!(tables("select * from db..orders"), ["db..orders", "orders"]);
}

#[test]
fn functions_are_pure_built_ins_or_calls() {
    let s = one(
        "select len(a), upper(b), isnull(c, 0), coalesce(c, 1), getdate(), sysdatetime(), \
         dateadd(day, 1, d), datediff(day, d, e), convert(int, x), cast(x as int), \
         iif(a = 1, 1, 0), count(*), sum(a), row_number() over (order by a), newid() \
         from t",
    );
    assert_eq!((s.kind, s.functions.len()), (Read, 0), "{s:?}");
    let s = one("select dbo.total(a) from t");
    assert_eq!(
        (s.kind, s.functions.as_slice()),
        (Call, &["dbo.total".to_owned()][..])
    );
    let s = one("select made_up(a) from t");
    assert_eq!(
        (s.kind, s.functions.as_slice()),
        (Call, &["made_up".to_owned()][..])
    );
    // A qualified name is somebody's function even when it shares a built-in's name.
    assert_eq!(kind("select dbo.len(a) from t"), Call);
    assert_eq!(kind("select value from string_split('a,b', ',')"), Read);
    // In FROM, an unqualified name may be a user's table function.
    assert_eq!(kind("select * from upper('x')"), Call);
    assert_eq!(kind("select * from dbo.tvf(1)"), Call);
    let s = one("update t set a = dbo.f(a) where id = 1");
    assert_eq!(
        (s.kind, s.functions.as_slice()),
        (Call, &["dbo.f".to_owned()][..])
    );
}

#[test]
fn lexical_forms_the_scanner_refuses() {
    for text in [
        "select $12.50",
        "select $action from t",
        "select {fn now()}",
        "select ? from t",
        "select `a` from t",
        "select 1abc",
        "select 0x1G",
        "select 1e",
        "select 1.2.3",
        "select 1 \\ 2",
        "select 1\x0b",
        "select 'a\0'",
    ] {
        assert_unknown(text);
    }
    assert_eq!(kind("select 0x1F, 0x, 1.5e3, .5, 5., 1E-3"), Read);
}

#[test]
fn go_lines_give_up() {
    // GO separates batches in client tools; sent to the server it is not a separator.
    assert_unknown("select 1\nGO\nselect 2");
    assert_unknown("select 1\n  go 5\ndelete from t");
    assert_unknown("go");
    assert_unknown("select 1 /* x\n */ go");
}

#[test]
fn postgres_text_under_tsql_and_back() {
    let pg = LexOptions::default();
    // Dollar quotes and E-strings are not T-SQL.
    assert_unknown("select $$a$$");
    assert_unknown("select E'\\''");
    // In PostgreSQL this is one string; in T-SQL the string ends at the second quote and a
    // DROP follows.
    let text = "select E'\\'; drop table t; --'";
    assert_eq!(
        classify_uncached(text, pg)
            .iter()
            .map(|s| s.kind)
            .collect::<Vec<_>>(),
        [Read]
    );
    assert_eq!(kinds(text), [Read, Ddl]);
    // Brackets quote names in T-SQL only.
    assert_eq!(tables("select * from [t]"), ["t"]);
    let v = classify_uncached("select * from [t]", pg);
    assert!(v.iter().all(|s| s.kind == Unknown), "{v:?}");
    // DELETE is reserved in T-SQL, so a new statement starts; in PostgreSQL it is a bare
    // column label: `select 1 as delete from t`.
    let v = classify_uncached("select 1 delete from t", pg);
    assert_eq!((v.len(), v[0].kind), (1, Read), "{v:?}");
    assert_eq!(kinds("select 1 delete from t"), [Read, Write]);
    // `#` is an operator in PostgreSQL, a temporary table in T-SQL.
    assert_eq!(tables("select * from #t"), ["#t"]);
}

#[test]
fn fingerprints_and_cache_keys_per_dialect() {
    assert_eq!(
        fingerprint(
            "SELECT [A], N'x', 0x1F, @V FROM #T -- c\n WHERE b = 'y'",
            TSQL
        )
        .as_deref(),
        Some("select [A], ?, ?, @v from #t where b = ?")
    );
    assert_eq!(fingerprint("select $$a$$", TSQL), None);
    let c = Classifier::new(16);
    let text = "select * from [t] delete from u";
    let t = c.classify(text, TSQL);
    let p = c.classify(text, LexOptions::default());
    assert_eq!(c.len(), 2);
    assert_eq!(t.iter().map(|s| s.kind).collect::<Vec<_>>(), [Read, Write]);
    assert!(p.iter().all(|s| s.kind == Unknown));
    // Same shape, other literals: a hit, same result.
    let again = c.classify("select * from [t] delete from u", TSQL);
    assert_eq!(c.len(), 2);
    assert_eq!(*again, *t);
    for text in [
        "select 'a' delete from t where x = 1",
        "exec p 'x'; select 1",
    ] {
        let cached: Vec<SqlStatement> = c
            .classify(text, TSQL)
            .iter()
            .map(|s| (**s).clone())
            .collect();
        assert_eq!(cached, all(text));
    }
}

#[test]
fn deep_batches_are_bounded() {
    let refused = |text: &str| {
        let v = all(text);
        assert!(v.iter().all(|s| s.kind == Unknown && !s.parsed), "{v:?}");
        v.iter().find_map(|s| s.refusal).expect("refused")
    };
    let long = format!("select 1{}", "+1".repeat(20_000));
    assert!(refused(&long).contains("too complex"));
    // One part too deep: the whole batch is refused, the deep part with the reason.
    let v = all(&format!("select 1; select 1{}", "+1".repeat(20_000)));
    assert_eq!(v.len(), 2);
    assert_eq!((v[0].refusal, v[1].refusal.is_some()), (None, true));
    let huge = format!("select '{}'", "x".repeat(5 << 20));
    assert!(refused(&huge).contains("too large"));
    // Deep, within bounds: analysed on a stack of its own.
    let s = one(&format!(
        "delete from t where a = 1{}",
        " or a = 1".repeat(2_000)
    ));
    assert_eq!((s.kind, s.refusal), (Write, None));
    // Nesting past the parser's recursion limit is unknown, not a crash.
    assert_unknown(&format!(
        "select {}1{}",
        "(".repeat(5_000),
        ")".repeat(5_000)
    ));
    assert_unknown(&format!("{}select 1", "if 1 = 1 ".repeat(500)));
    assert_unknown(&format!(
        "{}select 1{}",
        "begin ".repeat(500),
        " end".repeat(500)
    ));
}

proptest::proptest! {
    /// Any mix of T-SQL fragments: no panic, the cache agrees with a fresh classification,
    /// and only parsed statements have a kind other than `Unknown`.
    #[test]
    fn generated_batches_are_consistent(parts in proptest::collection::vec(proptest::sample::select(vec![
        "SELECT", " ", "\n", "GO", "[", "]", "]]", "\"", "'", "N'", "--", "/*", "*/", ";", "t", "@v",
        "#t", "(", ")", "DELETE FROM", "WHERE", "x = 1", "BEGIN", "END", "IF 1=1", "EXEC", "0x1F",
        "$", "{", ",", ".", "openquery(s, 'q')", "dbo.f(1)", "SET NOCOUNT ON", "DBCC x",
    ]), 0..14)) {
        let text = parts.concat();
        let c = Classifier::new(64);
        for variant in [text.clone(), text.replace('1', "2"), text.clone()] {
            let cached: Vec<SqlStatement> =
                c.classify(&variant, TSQL).iter().map(|s| (**s).clone()).collect();
            proptest::prop_assert_eq!(&cached, &all(&variant));
            proptest::prop_assert!(cached.iter().all(|s| s.parsed || s.kind == Unknown));
        }
    }
}
