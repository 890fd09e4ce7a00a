//! Fingerprints do not depend on how a literal is spelled.

use proptest::prelude::*;

use super::tests::{ON, fp};
use super::*;
use crate::action::SqlKind::*;

/// A literal rendered in one of PostgreSQL's spellings.
fn literal() -> impl Strategy<Value = String> {
    let body = "[a-z0-9 ;'\\\\$\\-*/\"\n]{0,12}";
    prop_oneof![
        body.prop_map(|s| format!("'{}'", s.replace('\'', "''"))),
        body.prop_map(|s| format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))),
        body.prop_filter("no closing tag", |s| (s.clone() + "$q$").find("$q$")
            == Some(s.len()))
            .prop_map(|s| format!("$q${s}$q$")),
        body.prop_filter("no closing tag", |s| (s.clone() + "$$").find("$$")
            == Some(s.len()))
            .prop_map(|s| format!("$${s}$$")),
        any::<u32>().prop_map(|n| n.to_string()),
        (any::<u16>(), any::<u16>()).prop_map(|(a, b)| format!("{a}.{b}")),
        (any::<u16>(), -30i32..30).prop_map(|(a, e)| format!("{a}e{e}")),
    ]
}

const TEMPLATE: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = {} AND note <> {}; \
                        UPDATE t SET a = {} WHERE id = {}";

fn fill(lits: &[String]) -> String {
    let mut out = TEMPLATE.to_owned();
    for l in lits {
        out = out.replacen("{}", l, 1);
    }
    out
}

proptest! {
    #[test]
    fn literals_do_not_change_shape_or_class(lits in proptest::collection::vec(literal(), 4)) {
        let text = fill(&lits);
        let reference = fill(&["1".into(), "'x'".into(), "2".into(), "3".into()]);
        prop_assert_eq!(fp(&text), fp(&reference));
        let got = classify_uncached(&text, ON);
        prop_assert_eq!(&got, &classify_uncached(&reference, ON));
        prop_assert_eq!(got.iter().map(|s| s.kind).collect::<Vec<_>>(), vec![Read, Write]);
        let c = Classifier::new(4);
        c.classify(&reference, ON);
        let cached: Vec<SqlStatement> = c.classify(&text, ON).iter().map(|s| (**s).clone()).collect();
        prop_assert_eq!(cached, got);
    }

    /// Whatever the text, a cached answer equals the uncached one, even when the cache was
    /// filled by a different text of the same shape.
    #[test]
    fn cache_agrees_with_uncached(parts in proptest::collection::vec(prop_oneof![
        Just("SELECT".to_owned()), Just("DROP".to_owned()), Just("TABLE".to_owned()),
        Just("t".to_owned()), Just(";".to_owned()), Just("--".to_owned()), Just("\n".to_owned()),
        Just("/*".to_owned()), Just("*/".to_owned()), Just("E".to_owned()), Just("'".to_owned()),
        Just("\\".to_owned()), Just("$$".to_owned()), Just("\"".to_owned()), Just(",".to_owned()),
        Just("pg_read_file(".to_owned()), Just(")".to_owned()), Just("WHERE".to_owned()),
        Just("DELETE FROM".to_owned()), Just(" ".to_owned()), Just("$1".to_owned()),
        literal(),
    ], 0..14), off in any::<bool>()) {
        let opts = LexOptions { standard_conforming_strings: !off, ..LexOptions::default() };
        let text = parts.concat();
        let c = Classifier::new(64);
        for variant in [text.clone(), text.replace('7', "8"), text.clone()] {
            let cached: Vec<SqlStatement> =
                c.classify(&variant, opts).iter().map(|s| (**s).clone()).collect();
            prop_assert_eq!(&cached, &classify_uncached(&variant, opts));
            prop_assert!(cached.iter().all(|s| s.parsed || s.kind == Unknown));
        }
    }
}
