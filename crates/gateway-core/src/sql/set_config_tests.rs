//! `set_config(name, value, is_local)` is judged like `SET name`, when the name is a literal
//! the scanner keeps in the shape and the cache key; anything else stays `Admin`.

use super::tests::{ON, fp, one};
use super::*;
use crate::action::SqlKind::{self, *};

fn kind(text: &str) -> SqlKind {
    one(text).kind
}

#[test]
fn a_literal_setting_name_is_judged_like_set() {
    for (text, want) in [
        // What asyncpg sends before and after its type introspection.
        (
            "SELECT current_setting('jit') AS cur, set_config('jit', 'off', false) AS new",
            Session,
        ),
        ("SELECT set_config('jit', $1, false)", Session),
        ("select PG_CATALOG.SET_CONFIG('JIT', 'on', true)", Session),
        (
            "SELECT set_config /* c */ ('statement_timeout', '5s', true)",
            Session,
        ),
        ("SELECT set_config('myapp.tenant', '42', false)", Session),
        // The settings `SET` of which is `Admin`.
        (
            "SELECT set_config('session_replication_role', 'replica', false)",
            Admin,
        ),
        (
            "SELECT set_config('search_path', 'evil, public', false)",
            Admin,
        ),
        ("SELECT set_config('ROLE', 'postgres', false)", Admin),
        (
            "SELECT set_config('session_authorization', 'x', true)",
            Admin,
        ),
        (
            "SELECT set_config('standard_conforming_strings', 'off', false)",
            Admin,
        ),
        ("SELECT set_config('row_security', 'off', false)", Admin),
        // Three parts are no setting `SET` accepts either.
        ("SELECT set_config('a.b.c', 'x', false)", Unknown),
        // The rest of the statement still counts.
        (
            "SELECT set_config('jit', 'off', false), nextval('s')",
            Write,
        ),
        (
            "SELECT set_config('jit', (SELECT pg_read_file('/etc/passwd')), false)",
            Admin,
        ),
        (
            "UPDATE t SET a = set_config('jit', 'off', false) WHERE id = 1",
            Write,
        ),
    ] {
        assert_eq!(kind(text), want, "{text}");
    }
}

#[test]
fn a_name_that_is_not_a_plain_literal_stays_admin() {
    for text in [
        "SELECT set_config($1, 'off', false)",
        "SELECT set_config(name, 'x', false) FROM t",
        "SELECT set_config('ji' || 't', 'off', false)",
        "SELECT set_config(E'jit', 'off', false)",
        "SELECT set_config($$jit$$, 'off', false)",
        "SELECT set_config('jit'::text, 'off', false)",
        "SELECT set_config(('jit'), 'off', false)",
        "SELECT set_config('', 'off', false)",
        "SELECT set_config('jit ', 'off', false)",
        "SELECT set_config('j''it', 'off', false)",
        "SELECT set_config('jit'\n'x', 'off', false)",
        "SELECT set_config('1jit', 'off', false)",
        "SELECT set_config('a..b', 'off', false)",
        "SELECT set_config(setting_name => 'jit', new_value => 'off', is_local => false)",
        "SELECT set_config('jit', 'off')",
        // Only PostgreSQL's own function: another schema's `set_config` is someone's code.
        "SELECT myschema.set_config('jit', 'off', false)",
        // A quoted name is the same function, but its literal is not kept.
        r#"SELECT "set_config"('jit', 'off', false)"#,
    ] {
        assert_eq!(kind(text), Admin, "{text}");
    }
}

#[test]
fn the_setting_name_is_part_of_the_shape_and_the_key() {
    assert_eq!(
        fp("SELECT set_config('JIT', 'off', false)").as_deref(),
        Some("select set_config('jit', ?, false)")
    );
    // Other literals, the value included, are still replaced.
    assert_eq!(
        fp("SELECT set_config(E'jit', 'off', false), 'x'").as_deref(),
        Some("select set_config(?, ?, false), ?")
    );
    assert_eq!(
        fp("SELECT set_config('jit', 'off', false)"),
        fp("SELECT set_config('jit', 'on', false)")
    );
    assert_ne!(
        fp("SELECT set_config('jit', 'off', false)"),
        fp("SELECT set_config('session_replication_role', 'off', false)")
    );
}

#[test]
fn two_setting_names_never_share_a_cache_entry() {
    let harmless = "SELECT set_config('jit', 'off', false)";
    let admin = "SELECT set_config('session_replication_role', 'replica', false)";
    for order in [[harmless, admin], [admin, harmless]] {
        let c = Classifier::new(16);
        for text in order {
            let got = c.classify(text, ON);
            assert_eq!(*got[0], classify_uncached(text, ON)[0], "{text}");
        }
        assert_eq!(c.len(), 2);
        assert_eq!(c.classify(harmless, ON)[0].kind, Session);
        assert_eq!(c.classify(admin, ON)[0].kind, Admin);
    }
    // Values share the name's entry; a different spelling of the name's case too.
    let c = Classifier::new(16);
    c.classify(harmless, ON);
    assert_eq!(
        c.classify("SELECT set_config('JIT', 'on', false)", ON)[0].kind,
        Session
    );
    assert_eq!(c.len(), 1);
    // A literal that is not kept shares the key of every other such literal: `Admin`.
    c.classify("SELECT set_config(E'jit', 'off', false)", ON);
    assert_eq!(
        c.classify("SELECT set_config(E'role', 'x', false)", ON)[0].kind,
        Admin
    );
}

proptest::proptest! {
    /// Whatever order names come in, a cached answer equals the uncached one.
    #[test]
    fn cached_set_config_answers_equal_uncached(names in proptest::collection::vec(
        proptest::sample::select(vec![
            "'jit'", "'JIT'", "'role'", "'search_path'", "'session_replication_role'",
            "'myapp.tenant'", "'a.b.c'", "E'jit'", "$$role$$", "'jit'::text", "$1", "''",
        ]),
        1..12,
    )) {
        let c = Classifier::new(64);
        for n in names {
            let text = format!("SELECT set_config({n}, 'v', false)");
            let cached: Vec<SqlStatement> =
                c.classify(&text, ON).iter().map(|s| (**s).clone()).collect();
            proptest::prop_assert_eq!(cached, classify_uncached(&text, ON), "{}", text);
        }
    }
}
