//! Classification with and without the target's catalog facts: user overloads of
//! allow-listed names, `t.f` calls, user operators and casts.

use std::sync::Arc;

use super::{CatalogFacts, LexOptions, classify_uncached};
use crate::action::{SqlKind, SqlStatement};

fn decided(text: &str, facts: Option<&CatalogFacts>) -> Vec<Arc<SqlStatement>> {
    let stmts: Arc<[Arc<SqlStatement>]> = classify_uncached(text, LexOptions::default())
        .into_iter()
        .map(Arc::new)
        .collect();
    CatalogFacts::apply(facts, &stmts).unwrap_or(stmts).to_vec()
}

fn one(text: &str, facts: Option<&CatalogFacts>) -> (SqlKind, Vec<String>) {
    let s = decided(text, facts);
    assert_eq!(s.len(), 1, "{text}");
    (s[0].kind, s[0].functions.clone())
}

fn facts() -> CatalogFacts {
    let mut f = CatalogFacts::default();
    assert!(f.add_function("lower"));
    assert!(f.add_function("evil"));
    assert!(f.add_function("leak"));
    assert!(f.add_operator("###", "evil_op"));
    assert!(f.add_cast("mytype", "evil_cast", false));
    f
}

#[test]
fn builtin_calls_stay_reads_when_no_user_function_shares_the_name() {
    let f = facts();
    for q in [
        "select upper(name) from t",
        "select pg_catalog.lower(name) from t",
        "select a.id, b.x from a join b on a.id = b.id where a.id in (1, 2) order by 1",
        "select name::text from t where name like 'a%'",
    ] {
        assert_eq!(one(q, Some(&f)), (SqlKind::Read, vec![]), "{q}");
        assert_eq!(
            one(q, Some(&CatalogFacts::default())).0,
            SqlKind::Read,
            "{q}"
        );
    }
}

#[test]
fn an_overloaded_builtin_name_is_a_call() {
    let f = facts();
    assert_eq!(
        one("select lower(v) from t", Some(&f)),
        (SqlKind::Call, vec!["lower".to_string()])
    );
    // Qualified in pg_catalog it can only be the built-in.
    assert_eq!(
        one("select pg_catalog.lower(v) from t", Some(&f)).0,
        SqlKind::Read
    );
    // Without facts (the lookup failed) it could be either: a call.
    assert_eq!(one("select lower(v) from t", None).0, SqlKind::Call);
}

#[test]
fn row_dot_user_function_is_a_call() {
    let f = facts();
    assert_eq!(
        one("select t.leak from t", Some(&f)),
        (SqlKind::Call, vec!["leak".to_string()])
    );
    assert_eq!(one("select t.id from t", Some(&f)).0, SqlKind::Read);
}

#[test]
fn user_operators_are_calls_of_their_functions() {
    let f = facts();
    assert_eq!(
        one("select 1 ### 2", Some(&f)),
        (SqlKind::Call, vec!["evil_op".to_string()])
    );
    assert_eq!(
        one("select 1 operator(public.###) 2", Some(&f)),
        (SqlKind::Call, vec!["evil_op".to_string()])
    );
    // A user `=` is reached by IN, joins, DISTINCT and CASE too.
    let mut eq = CatalogFacts::default();
    assert!(eq.add_operator("=", "my_eq"));
    for q in [
        "select * from t where a = 1",
        "select * from t where a in (1, 2)",
        "select distinct a from t",
        "select case a when 1 then 2 end from t",
        "select a from t union select b from u",
    ] {
        assert_eq!(
            one(q, Some(&eq)),
            (SqlKind::Call, vec!["my_eq".into()]),
            "{q}"
        );
    }
    let mut lt = CatalogFacts::default();
    assert!(lt.add_operator("<", "my_lt"));
    assert_eq!(
        one("select a from t order by a", Some(&lt)).0,
        SqlKind::Call
    );
    for q in [
        "select max(a) from t",
        "select row_number() over (order by a) from t",
        "select array_agg(a order by a) from t",
    ] {
        assert_eq!(
            one(q, Some(&lt)),
            (SqlKind::Call, vec!["my_lt".into()]),
            "{q}"
        );
    }
    assert_eq!(one("select a from t", Some(&lt)).0, SqlKind::Read);
}

#[test]
fn user_casts_are_calls_of_their_functions() {
    let f = facts();
    for q in ["select 1::mytype", "select cast(1 as public.mytype)"] {
        assert_eq!(
            one(q, Some(&f)),
            (SqlKind::Call, vec!["evil_cast".into()]),
            "{q}"
        );
    }
    assert_eq!(one("select 1::int8", Some(&f)).0, SqlKind::Read);
    // A cast PostgreSQL applies unwritten: any expression may reach it.
    let mut imp = CatalogFacts::default();
    assert!(imp.add_cast("mytype", "conv", true));
    assert_eq!(
        one("select * from t where a = 1", Some(&imp)).0,
        SqlKind::Call
    );
    assert_eq!(one("select 1", Some(&imp)).0, SqlKind::Read);
}

#[test]
fn without_facts_everything_trusted_by_name_is_a_call() {
    let (k, fs) = one("select lower(a) from t where b = 1", None);
    assert_eq!(k, SqlKind::Call);
    assert_eq!(fs, vec!["lower".to_string(), "operator(=)".to_string()]);
    // Nothing trusted by name: nothing changes.
    assert_eq!(one("select 1", None).0, SqlKind::Read);
    assert_eq!(one("select * from t", None).0, SqlKind::Read);
}

#[test]
fn facts_keep_worse_kinds_and_the_same_statements_when_unchanged() {
    let f = facts();
    assert_eq!(
        one("select lower(v) into x from t", Some(&f)).0,
        SqlKind::Call
    );
    assert_eq!(one("drop table t", Some(&f)).0, SqlKind::Ddl);
    let stmts: Arc<[Arc<SqlStatement>]> =
        classify_uncached("select upper(a) from t", LexOptions::default())
            .into_iter()
            .map(Arc::new)
            .collect();
    assert!(CatalogFacts::apply(Some(&f), &stmts).is_none());
}

#[test]
fn facts_are_bounded() {
    let mut f = CatalogFacts::default();
    for i in 0..super::MAX_FACTS {
        assert!(f.add_function(&format!("f{i}")));
    }
    assert!(!f.add_function("one_more"));
}
