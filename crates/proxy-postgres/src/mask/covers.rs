//! Columns whose values carry a covered field: a column of a composite type (or an array or
//! domain of one, at any depth) one of whose fields a column rule covers, such as
//! `customer_profiles.contact` of type `postal_contact` under a `postal_contact.ssn` rule.
//!
//! Read as itself, such a column is masked field by field through its type. Read through an
//! expression (`contact::text`, `to_jsonb(contact)->>'ssn'`, `concat(contact)`, `t::text`),
//! the result is text or JSON that no longer says which part was the field, so an output
//! computed from such a column is masked whole. The columns are looked up on the catalog
//! connection when first needed, again after a minute and after the session runs DDL; the
//! statement's lineage (`SqlStatement::outputs`) says which outputs read them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_core::action::{Output, SqlKind, SqlStatement};

use super::Masking;
use super::catalog::{Catalog, TYPE_KEY};
use super::deep::Shaper;
use crate::codec::{self, tags::backend as be};
use crate::ctx::SessionCtx;

/// How long a lookup of the covered columns stands: tables created since by other sessions
/// are seen after at most this long (and at once after this session's own DDL).
const MAX_AGE: Duration = Duration::from_secs(60);

/// Key under which [`Catalog::resolve`]'s callers ask for the covered columns.
pub(super) const COVERS_KEY: i16 = -1;

/// At most this many columns of user-defined container types are looked at; a database
/// with more is treated as if the lookup had failed (fail closed).
const MAX_COLUMNS: usize = 100_000;

/// One column whose values carry a covered field.
#[derive(Debug)]
pub(super) struct Cover {
    /// `schema.relation`, lower-case.
    table: Box<str>,
    /// The column, lower-case.
    column: Box<str>,
    /// The rule covering the field.
    rule: usize,
}

/// The session's covered columns.
#[derive(Debug)]
pub(super) enum Covers {
    Known(Vec<Cover>),
    /// The catalog could not say: every computed output of a statement that reads a table
    /// is masked whole.
    Unavailable,
}

/// A column of a relation of a user-defined type: `schema.relation`, column, type OID.
type UserColumn = (String, String, u32);

/// Columns of tables, views and foreign tables whose types are user-defined (OID 16384 and
/// up) and may hold a composite: composites, arrays and domains (enums and base types of
/// extensions cannot); `None` if the catalog could not answer or there are too many.
pub(super) async fn user_typed_columns(
    catalog: &mut Catalog,
    ctx: &SessionCtx,
) -> Option<Vec<UserColumn>> {
    let sql = format!(
        "SELECT n.nspname, c.relname, a.attname, a.atttypid \
         FROM pg_catalog.pg_attribute a \
         JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_catalog.pg_type y ON y.oid = a.atttypid \
         WHERE a.attnum > 0 AND NOT a.attisdropped AND a.atttypid >= 16384 \
           AND (y.typtype IN ('c', 'd') OR y.typelem <> 0) \
           AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
         LIMIT {}",
        MAX_COLUMNS + 1
    );
    let mut cols = Vec::new();
    let mut malformed = false;
    let answered = catalog
        .ask(
            ctx,
            |out| codec::put_query(out, &sql),
            |tag, body| {
                if tag != be::DATA_ROW {
                    return;
                }
                let row = codec::parse_data_row(body).ok();
                let text = |b: &[u8]| String::from_utf8_lossy(b).to_lowercase();
                match row.as_deref() {
                    Some([Some(ns), Some(rel), Some(att), Some(ty)]) => {
                        match std::str::from_utf8(ty).ok().and_then(|t| t.parse().ok()) {
                            Some(ty) => {
                                cols.push((format!("{}.{}", text(ns), text(rel)), text(att), ty))
                            }
                            None => malformed = true,
                        }
                    }
                    _ => malformed = true,
                }
            },
        )
        .await;
    (answered && !malformed && cols.len() <= MAX_COLUMNS).then_some(cols)
}

impl Covers {
    /// The covered columns among `cols`, their types shaped by `shaper` (a type the catalog
    /// could not describe counts as covered).
    pub fn build(cols: Vec<UserColumn>, shaper: &Shaper<'_>) -> Covers {
        let covers = cols
            .into_iter()
            .filter_map(|(table, column, ty)| {
                let rule = match shaper.types.get(&ty) {
                    Some(Some(_)) => shaper.shape(ty).covered_rule()?,
                    _ => usize::MAX,
                };
                Some(Cover {
                    table: table.into(),
                    column: column.into(),
                    rule,
                })
            })
            .collect();
        Covers::Known(covers)
    }

    /// The rule to mask computed outputs of `statements` with: one of them reads a covered
    /// column (or a whole row holding one) through an expression, or can't be followed
    /// output by output while it reads a table with a covered column. `fallback` is the rule
    /// credited when the catalog could not say.
    pub fn rule(&self, statements: &[Arc<SqlStatement>], fallback: Option<usize>) -> Option<usize> {
        let covers = match self {
            Covers::Unavailable => {
                return statements
                    .iter()
                    .any(|s| !s.tables.is_empty())
                    .then_some(fallback)
                    .flatten();
            }
            Covers::Known(c) if c.is_empty() => return None,
            Covers::Known(c) => c,
        };
        for s in statements {
            let relevant = covers
                .iter()
                .filter(|c| s.tables.iter().any(|t| same_table(&c.table, t)));
            let Some(first) = relevant.clone().next() else {
                continue;
            };
            let Some(outputs) = &s.outputs else {
                return Some(first.rule);
            };
            for o in outputs {
                let Output::Expr {
                    reads,
                    opaque,
                    rows,
                    bare,
                    ..
                } = o
                else {
                    continue;
                };
                if *opaque {
                    return Some(first.rule);
                }
                let hit = relevant.clone().find(|c| {
                    reads.iter().any(|r| *r == *c.column)
                        || (!bare && rows.iter().any(|t| same_table(&c.table, t)))
                });
                if let Some(c) = hit {
                    return Some(c.rule);
                }
            }
        }
        None
    }
}

impl Masking {
    /// Answer the keys [`Masking::unresolved`] and [`Masking::covers_wanted_for`] gave: column
    /// origins and types through the catalog, and the covered columns.
    pub async fn resolve(&mut self, ctx: &SessionCtx, keys: &[(u32, i16)]) {
        self.catalog.resolve(ctx, keys).await;
        if self.covers_current() || !keys.contains(&(0, COVERS_KEY)) {
            return;
        }
        let Some(cols) = user_typed_columns(&mut self.catalog, ctx).await else {
            tracing::warn!(
                "catalog lookup of composite columns failed: computed results are masked"
            );
            self.covers = Some((Covers::Unavailable, Instant::now()));
            return;
        };
        let types: Vec<(u32, i16)> = cols
            .iter()
            .filter(|c| self.catalog.type_info(c.2).is_none())
            .map(|c| (c.2, TYPE_KEY))
            .collect();
        self.catalog.resolve(ctx, &types).await;
        let shaper = Shaper {
            types: self.catalog.types(),
            masks: &self.masks,
        };
        self.covers = Some((Covers::build(cols, &shaper), Instant::now()));
    }

    /// Whether the covered columns were looked up, within [`MAX_AGE`].
    pub(super) fn covers_current(&self) -> bool {
        self.covers
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() < MAX_AGE)
    }

    /// Whether errors of a statement must wait for the covered columns: column rules are in
    /// force, they have not been looked up, and the statement reads a table.
    pub fn covers_wanted_for(&self, statements: &[Arc<SqlStatement>]) -> Option<(u32, i16)> {
        (!self.covers_current()
            && !self.masks.column_rule_names().is_empty()
            && statements.iter().any(|s| !s.tables.is_empty()))
        .then_some((0, COVERS_KEY))
    }

    /// The rule that masks whole the computed outputs of `statements`, because one reads a
    /// column carrying a covered composite field through an expression (see `covers`).
    pub fn cover_rule(&self, statements: &[Arc<SqlStatement>]) -> Option<usize> {
        self.covers
            .as_ref()?
            .0
            .rule(statements, self.masks.any_rule())
    }

    /// `statements` ran and may have changed which columns are covered: look them up again
    /// when next needed.
    pub fn statements_done(&mut self, statements: &[Arc<SqlStatement>]) {
        if self.covers.is_some() && changes_columns(statements) {
            self.covers = None;
        }
    }
}

/// Whether a statement's table name `t` (`orders` or `public.orders`, lower-case) names the
/// relation `full` (`schema.relation`).
fn same_table(full: &str, t: &str) -> bool {
    full == t
        || full
            .strip_suffix(t)
            .is_some_and(|head| head.ends_with('.') && !t.contains('.'))
}

/// Whether a statement may change which columns are covered (creates or alters a table or
/// type): the covered columns are then looked up again.
fn changes_columns(statements: &[Arc<SqlStatement>]) -> bool {
    statements
        .iter()
        .any(|s| matches!(s.kind, SqlKind::Ddl | SqlKind::Admin | SqlKind::Unknown))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_core::sql::{LexOptions, classify_uncached};

    fn statements(sql: &str) -> Vec<Arc<SqlStatement>> {
        classify_uncached(sql, LexOptions::default())
            .into_iter()
            .map(Arc::new)
            .collect()
    }

    fn covers() -> Covers {
        Covers::Known(vec![Cover {
            table: "public.customer_profiles".into(),
            column: "contact".into(),
            rule: 3,
        }])
    }

    #[test]
    fn computed_outputs_reading_a_covered_column_are_masked() {
        for sql in [
            "SELECT contact::text FROM customer_profiles",
            "SELECT id, concat(contact) FROM public.customer_profiles",
            "SELECT to_jsonb(t) FROM customer_profiles t",
            "SELECT x FROM (SELECT contact::text AS x FROM customer_profiles) s",
            "WITH c AS (SELECT contact AS k FROM customer_profiles) SELECT k::text FROM c",
            "SELECT (SELECT 1) FROM customer_profiles",
            "SELECT id FROM customer_profiles UNION SELECT length(contact::text) FROM customer_profiles",
        ] {
            assert_eq!(covers().rule(&statements(sql), Some(0)), Some(3), "{sql}");
        }
    }

    #[test]
    fn outputs_that_read_no_covered_column_pass() {
        for sql in [
            "SELECT contact FROM customer_profiles",
            "SELECT t FROM customer_profiles t",
            "SELECT count(*), max(id) + 1 FROM customer_profiles",
            "SELECT contact::text FROM other_table",
            "SELECT upper(name) FROM customers",
        ] {
            assert_eq!(covers().rule(&statements(sql), Some(0)), None, "{sql}");
        }
        assert_eq!(
            Covers::Known(Vec::new()).rule(
                &statements("SELECT contact::text FROM customer_profiles"),
                Some(0)
            ),
            None
        );
    }

    #[test]
    fn without_the_catalog_computed_outputs_of_table_reads_are_masked() {
        let s = statements("SELECT upper(name) FROM customers");
        assert_eq!(Covers::Unavailable.rule(&s, Some(0)), Some(0));
        assert_eq!(
            Covers::Unavailable.rule(&statements("SELECT 1 + 1"), Some(0)),
            None
        );
    }

    #[test]
    fn table_names_match_with_or_without_schema() {
        assert!(same_table("public.orders", "orders"));
        assert!(same_table("public.orders", "public.orders"));
        assert!(!same_table("public.orders", "x.orders"));
        assert!(!same_table("public.myorders", "orders"));
        assert!(!same_table("public.orders", "orders2"));
    }
}
