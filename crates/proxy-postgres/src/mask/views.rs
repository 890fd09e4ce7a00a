//! Columns of views, seen through to the tables they read. PostgreSQL names a view as the
//! origin of its columns, and a view can rename a covered column (`card AS cc`) or compute
//! from it. The catalog side-connection reads each view's definition once: the classifier
//! reports its outputs (a column passed through under which name, or computed from which
//! columns and whole rows), and `pg_depend` the base tables it reads, through views over views.
//!
//! A view column is then judged by its source: a passed-through column by the base column's
//! name; a computed one masked whole when it reads a covered column or a covered table's whole
//! rows; and when the definition tells nothing (a view over a view, a set operation, a
//! `WITH`), every column of a view that reads a covered table is masked whole.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use gateway_core::action::Output;
use gateway_core::masking::SessionMasks;
use gateway_core::sql::LexOptions;

use crate::codec::{self, tags::backend as be};
use crate::ctx::SessionCtx;

use super::catalog::Catalog;

/// Where a view's column comes from.
#[derive(Debug, Clone)]
pub(crate) struct ViewOrigin {
    /// The view definition's output for this column; `None` when it can't be told.
    pub output: Option<Output>,
    /// The tables the view reads, through other views (`schema.table`).
    pub bases: Arc<[String]>,
    /// The catalog answered; when it did not, every column counts as reading covered data.
    pub known: bool,
}

/// What masking does with a view's column.
pub(crate) enum Judged<'a> {
    /// Judge it as this column (name of a base table's column; its table when only one).
    Column {
        table: Option<&'a str>,
        name: &'a str,
    },
    /// Mask it whole under this rule.
    Whole(usize),
    /// Nothing covered: judge it by its own name, with no table.
    Own,
}

impl ViewOrigin {
    pub fn judge(&self, masks: &SessionMasks) -> Judged<'_> {
        if !self.known {
            return match masks.column_rule_names() {
                [] => Judged::Own,
                _ => Judged::Whole(usize::MAX),
            };
        }
        let covered = || masks.touched_rule(self.bases.iter().map(String::as_str));
        match &self.output {
            Some(Output::Column { name, .. }) => Judged::Column {
                table: match &self.bases[..] {
                    [only] => Some(only),
                    _ => None,
                },
                name,
            },
            Some(Output::Expr {
                reads,
                rows,
                opaque,
                ..
            }) => {
                let rule = if *opaque {
                    covered()
                } else {
                    reads
                        .iter()
                        .find_map(|r| masks.mentioned_rule(r))
                        .or_else(|| masks.touched_rule(rows.iter().map(String::as_str)))
                };
                rule.map_or(Judged::Own, Judged::Whole)
            }
            _ => covered().map_or(Judged::Own, Judged::Whole),
        }
    }
}

/// One view as read from the catalog.
#[derive(Debug, Clone)]
pub(crate) struct ViewDef {
    /// Its definition's outputs, one per column; `None` when they can't be told.
    pub outputs: Option<Arc<[Output]>>,
    pub bases: Arc<[String]>,
    /// The catalog answered: `bases` is what it reads.
    pub known: bool,
}

impl ViewDef {
    /// Where column `attnum` (1-based) comes from.
    pub fn column(&self, attnum: i16) -> ViewOrigin {
        let at = usize::try_from(attnum).ok().and_then(|a| a.checked_sub(1));
        ViewOrigin {
            output: at.and_then(|a| self.outputs.as_ref()?.get(a).cloned()),
            bases: self.bases.clone(),
            known: self.known,
        }
    }
}

/// What the catalog says about one view.
#[derive(Default)]
struct View {
    bases: Vec<String>,
    /// It reads another view, so names in its definition may be that view's renames.
    nested: bool,
}

impl Catalog {
    /// For each view in `defs` (oid → definition): its outputs and the tables it reads.
    pub(super) async fn views(
        &mut self,
        ctx: &SessionCtx,
        defs: &HashMap<u32, String>,
    ) -> HashMap<u32, ViewDef> {
        let mut sql = String::from(
            "WITH RECURSIVE dep(view, rel, depth) AS ( \
             SELECT r.ev_class, d.refobjid, 1 FROM pg_catalog.pg_rewrite r \
             JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass \
             AND d.objid = r.oid AND d.refclassid = 'pg_catalog.pg_class'::regclass \
             AND d.refobjid <> r.ev_class WHERE r.ev_class IN (",
        );
        for (i, oid) in defs.keys().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(sql, "{sep}{oid}::oid");
        }
        sql.push_str(
            ") UNION SELECT dep.view, d.refobjid, dep.depth + 1 FROM dep \
             JOIN pg_catalog.pg_rewrite r ON r.ev_class = dep.rel \
             JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass \
             AND d.objid = r.oid AND d.refclassid = 'pg_catalog.pg_class'::regclass \
             AND d.refobjid <> r.ev_class WHERE dep.depth < 16) \
             SELECT DISTINCT dep.view, dep.depth = 1, c.relkind, n.nspname, c.relname \
             FROM dep JOIN pg_catalog.pg_class c ON c.oid = dep.rel \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace",
        );
        let mut found: HashMap<u32, View> = HashMap::new();
        let answered = self
            .ask(
                ctx,
                |out| codec::put_query(out, &sql),
                |tag, body| {
                    if tag == be::DATA_ROW
                        && let Ok(v) = codec::parse_data_row(body)
                        && let [Some(oid), Some(direct), Some(kind), Some(ns), Some(rel)] = v[..]
                        && let Some(oid) = std::str::from_utf8(oid)
                            .ok()
                            .and_then(|o| o.parse::<u32>().ok())
                    {
                        let view = found.entry(oid).or_default();
                        match kind {
                            b"r" | b"p" | b"f" => view.bases.push(format!(
                                "{}.{}",
                                String::from_utf8_lossy(ns),
                                String::from_utf8_lossy(rel)
                            )),
                            b"v" | b"m" if direct == b"t" => view.nested = true,
                            _ => {}
                        }
                    }
                },
            )
            .await;
        let mut out = HashMap::new();
        for (oid, def) in defs {
            let mut view = found.remove(oid).unwrap_or_default();
            view.bases.sort();
            view.bases.dedup();
            let outputs = if answered && !view.nested {
                let classified = ctx.services.classifier.classify(def, LexOptions::default());
                match &classified[..] {
                    // `pg_get_viewdef` lists every column, so a `*` means it was not read.
                    [one] => one
                        .outputs
                        .clone()
                        .filter(|o| !o.iter().any(|o| matches!(o, Output::Wildcard))),
                    _ => None,
                }
            } else {
                None
            };
            out.insert(
                *oid,
                ViewDef {
                    outputs: outputs.map(Arc::from),
                    bases: Arc::from(view.bases),
                    known: answered,
                },
            );
        }
        out
    }
}
