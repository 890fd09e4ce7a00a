use super::outputs;
use crate::action::Output::{self, Column, Wildcard};
use sqlparser::dialect::{MsSqlDialect, PostgreSqlDialect};
use sqlparser::parser::Parser;

fn of(sql: &str) -> Option<Vec<Output>> {
    let ms = Parser::parse_sql(&MsSqlDialect {}, sql).expect("parses");
    let pg = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok();
    let got = outputs(&ms[0]);
    if let Some(pg) = pg {
        assert_eq!(outputs(&pg[0]), got, "dialects disagree on {sql}");
    }
    got
}

fn expr(reads: &[&str], opaque: bool) -> Output {
    Output::Expr {
        alias: None,
        reads: reads.iter().map(|r| r.to_string()).collect(),
        opaque,
        rows: Vec::new(),
        bare: false,
    }
}

fn rows_of(sql: &str) -> Vec<Vec<String>> {
    of(sql)
        .expect("outputs")
        .into_iter()
        .map(|o| match o {
            Output::Expr { rows, .. } => rows,
            _ => Vec::new(),
        })
        .collect()
}

fn col(name: &str, alias: Option<&str>) -> Output {
    Column {
        name: name.into(),
        alias: alias.map(Into::into),
    }
}

#[test]
fn columns_renamed_and_computed() {
    assert_eq!(
        of("select id, c.Card as x, upper(c.card), (name) n, 1, \
            (select max(s) from t) from customers c"),
        Some(vec![
            col("id", None),
            col("card", Some("x")),
            expr(&["card"], false),
            col("name", Some("n")),
            expr(&[], false),
            expr(&["s"], true),
        ])
    );
    assert_eq!(
        of("select * from a join b on a.id = b.id where b.card like '4%'"),
        Some(vec![Wildcard])
    );
}

#[test]
fn bare_whole_rows_are_told_apart_from_expressions_over_them() {
    let pg = Parser::parse_sql(
        &PostgreSqlDialect {},
        "select c, c::text, row(c.*), t.x from customers c, (select c as x from customers c) t",
    )
    .expect("parses");
    let bare: Vec<bool> = outputs(&pg[0])
        .expect("followed")
        .iter()
        .map(|o| matches!(o, Output::Expr { bare: true, .. }))
        .collect();
    assert_eq!(bare, [true, false, false, true]);
}

#[test]
fn whole_row_references_name_their_table() {
    let t = |s: &str| vec![s.to_string()];
    assert_eq!(
        rows_of(
            "select translate(c::text, '1', 'a'), to_jsonb(c)->>'ssn', c, id \
             from public.customers c join orders on true"
        ),
        vec![
            t("public.customers"),
            t("public.customers"),
            t("public.customers"),
            vec![]
        ]
    );
    assert_eq!(
        rows_of("select customers from customers"),
        vec![t("customers")]
    );
    let pg = Parser::parse_sql(&PostgreSqlDialect {}, "select row(c.*) from customers c")
        .expect("parses");
    assert!(matches!(
        outputs(&pg[0]).as_deref(),
        Some([Output::Expr { rows, .. }]) if rows == &t("customers")
    ));
}

#[test]
fn outputs_are_followed_through_derived_tables_ctes_and_unions() {
    let e = |alias: Option<&str>, reads: &[&str]| Output::Expr {
        alias: alias.map(Into::into),
        reads: reads.iter().map(|r| r.to_string()).collect(),
        opaque: false,
        rows: Vec::new(),
        bare: false,
    };
    assert_eq!(
        of("with x as (select upper(card) c, id from t) select c, id, x.id as k from x"),
        Some(vec![
            e(Some("c"), &["card"]),
            col("id", None),
            col("id", Some("k"))
        ])
    );
    assert_eq!(
        of("select v, w from (select card as v, name || ssn as w from t) s"),
        Some(vec![col("card", Some("v")), e(Some("w"), &["name", "ssn"])])
    );
    assert_eq!(
        of("select s.* from (select name from t) s(n)"),
        Some(vec![col("name", Some("n"))])
    );
    // A set operation's output reads what either side reads.
    assert_eq!(
        of("select id, name from a union all select id, card from b"),
        Some(vec![col("id", None), e(None, &["card", "name"])])
    );
    // A derived table's whole row reads what its outputs read.
    assert_eq!(
        of("select upper(s::text) from (select card from t) s"),
        Some(vec![e(None, &["card"])])
    );
}

#[test]
fn what_cannot_be_followed_reports_nothing() {
    for sql in [
        "with recursive x as (select 1 n union all select n + 1 from x) select n from x",
        "select * from generate_series(1, 3) g",
        "select card into #t from customers",
        "insert into t select card from s",
        "update t set a = 1",
    ] {
        let ms = Parser::parse_sql(&MsSqlDialect {}, sql);
        let pg = Parser::parse_sql(&PostgreSqlDialect {}, sql);
        for parsed in [ms, pg].into_iter().flatten() {
            assert_eq!(outputs(&parsed[0]), None, "{sql}");
        }
    }
    let ms = Parser::parse_sql(&MsSqlDialect {}, "select card from t for json path");
    if let Ok(s) = ms {
        assert_eq!(outputs(&s[0]), None);
    }
}
