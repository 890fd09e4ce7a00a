//! Statements built to crash the classifier or to hide what they call: bounded depth and size,
//! and calls in every spelling.

use proptest::prelude::*;

use super::tests::{ON, one};
use super::*;
use crate::action::SqlKind::*;

/// Statements deep or large enough to overflow a stack when parsed, walked or dropped are
/// refused with a reason, or analysed on a stack of their own; none takes the process down.
/// These run on the test harness's own small thread stack.
#[test]
fn deep_statements_are_bounded() {
    let refused = |text: &str| {
        let got = classify_uncached(text, ON);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].kind, got[0].parsed), (Unknown, false));
        got[0].refusal.expect("refused")
    };
    let long = format!("select 1{}", "+1".repeat(40_000));
    assert!(refused(&long).contains("too complex"));
    let ands = format!("select 1 where 1=1{}", " and 1=1".repeat(50_000));
    assert!(refused(&ands).contains("too complex"));
    let ors = format!("select true{}", " or true".repeat(50_000));
    assert!(refused(&ors).contains("too complex"));
    let casts = format!("select 1{}", "::int".repeat(20_000));
    assert!(refused(&casts).contains("too complex"));
    // Deep, but within bounds: analysed on a stack of its own, and still classified.
    for text in [
        format!("select 1{}", "+1".repeat(4_000)),
        format!("select x from t where a=1{}", " or a=1".repeat(2_000)),
        format!("delete from t where a=1{}", " or a=1".repeat(2_000)),
        format!("select 1{}", "::int".repeat(1_500)),
        format!("select {}1{}", "(1+".repeat(12), ")".repeat(12)),
    ] {
        let s = one(&text);
        assert!(s.parsed && s.refusal.is_none(), "{s:?}");
        assert_eq!(
            s.kind,
            if text.starts_with("delete") {
                Write
            } else {
                Read
            }
        );
    }
    let huge = format!("select '{}'", "x".repeat(5 << 20));
    assert!(refused(&huge).contains("too large"));
    assert!(Classifier::new(4).classify(&huge, ON)[0].refusal.is_some());
    let many = format!("select 1 from t where id in (0{})", ",1".repeat(600_000));
    assert!(refused(&many).contains("too large"));
    // Wide is not deep: lists of any length are analysed.
    let list = format!("select 1 from t where id in (0{})", ",1".repeat(100_000));
    assert_eq!((one(&list).kind, one(&list).refusal), (Read, None));
    // Nesting past the parser's own recursion limit is unknown, not a crash.
    let parens = format!("select {}1{}", "(".repeat(5_000), ")".repeat(5_000));
    assert_eq!(one(&parens).kind, Unknown);
    let subqueries = format!("select {}1{}", "(select ".repeat(3_000), ")".repeat(3_000));
    assert_eq!(one(&subqueries).kind, Unknown);
}

/// Text of PostgreSQL-like pieces, nested and chained at random.
fn nested_sql() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("1".to_owned()),
        Just("a".to_owned()),
        Just("'x'".to_owned()),
        Just("$1".to_owned()),
        Just("t.c".to_owned()),
    ];
    leaf.prop_recursive(6, 400, 8, |inner| {
        prop_oneof![
            (
                inner.clone(),
                1usize..3000,
                prop_oneof![
                    Just("+"),
                    Just(" and "),
                    Just(" or "),
                    Just("::int"),
                    Just("||"),
                    Just(" is not null"),
                    Just("->'k'"),
                    Just("[1]"),
                ]
            )
                .prop_map(|(e, n, op)| format!("{e}{}", op.repeat(n))),
            inner.clone().prop_map(|e| format!("({e})")),
            inner.clone().prop_map(|e| format!("f({e}, {e})")),
            inner.clone().prop_map(|e| format!("(select {e} from t)")),
            proptest::collection::vec(inner, 1..50).prop_map(|v| v.join(", ")),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Fuzzing for the classifier's bounds: generated statements with long operator chains,
    /// deep brackets and wide lists are classified (or refused with a reason) without
    /// crashing, and a refusal is never a read.
    #[test]
    fn generated_statements_never_crash(body in nested_sql(), prefix in prop_oneof![
        Just("select "), Just("select x from t where "), Just("update t set a = "),
    ]) {
        let text = format!("{prefix}{body}");
        for s in classify_uncached(&text, ON) {
            prop_assert!(s.refusal.is_none() || (s.kind == Unknown && !s.parsed));
        }
    }
}

/// PostgreSQL runs `(x).f` as `f(x)` when `x` has no field `f`, and `t.f` as `f(t)` when `t`
/// has no column `f`: calls in attribute form count like calls.
#[test]
fn calls_in_attribute_form_are_calls() {
    for (text, kind) in [
        ("select ('seq1'::regclass).nextval", Write),
        ("select (42::bigint).pg_advisory_lock", Admin),
        ("select ('-1'::int).lo_creat", Admin),
        (
            "select (pid).pg_terminate_backend from pg_stat_activity where pid <> 1",
            Admin,
        ),
        ("select ('select card from t').ts_stat", Admin),
        (
            "select a.pg_terminate_backend from pg_stat_activity a",
            Admin,
        ),
        ("select s.x.nextval from s", Write),
        ("select (x).\"NEXTVAL\" from t", Call),
    ] {
        assert_eq!(one(text).kind, kind, "{text}");
    }
}

/// A statement is a read only when every function it calls is a built-in known to be free
/// of side effects; any other call makes it `sql.call` with the function named.
#[test]
fn calls_of_functions_not_known_to_be_pure_are_decided_by_name() {
    let call = |text: &str| {
        let s = one(text);
        (s.kind, s.functions)
    };
    let named = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(call("select my_fn(1)"), (Call, named(&["my_fn"])));
    assert_eq!(
        call("select App.Refresh(1), my_fn(2)"),
        (Call, named(&["app.refresh", "my_fn"]))
    );
    assert_eq!(
        call("select public.lower('x')"),
        (Call, named(&["public.lower"]))
    );
    assert_eq!(call("select \"Lower\"('x')"), (Call, named(&["Lower"])));
    assert_eq!(
        call("select * from my_srf(1) f"),
        (Call, named(&["my_srf"]))
    );
    assert_eq!(call("select (t).city from t"), (Call, named(&["city"])));
    assert_eq!(
        call("insert into t values (my_fn())"),
        (Call, named(&["my_fn"]))
    );
    assert_eq!(call("explain select my_fn()"), (Call, named(&["my_fn"])));
    // Known effects stay what they are; DDL stays worse than a call.
    assert_eq!(call("create table t2 as select my_fn()").0, Ddl);
    assert_eq!(call("select nextval('s'), my_fn()").0, Call);
    for text in [
        "select lower(a), upper(b), count(*), coalesce(a, 1), now(), length(x) from t",
        "select pg_catalog.format_type(t.oid, null), pg_catalog.pg_get_userbyid(1) from pg_type t",
        "select * from generate_series(1, 3) g, unnest(array[1]) u",
        "select jsonb_build_object('a', 1) -> 'a', to_char(now(), 'YYYY'), array_agg(x) from t",
        "select (information_schema._pg_expandarray(i.indkey)).n from pg_index i",
        "select has_table_privilege('t', 'select'), pg_table_is_visible(c.oid) from pg_class c",
        "select row_number() over (order by id), lag(x) over () from t",
    ] {
        assert_eq!(call(text), (Read, Vec::new()), "{text}");
    }
}
