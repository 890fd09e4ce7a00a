//! The output columns of a `SELECT`, read from the statement alone: which are columns of
//! tables passed through (perhaps renamed), and which are computed, from which columns and
//! whole rows. Masking uses it where the wire does not say where a result column comes from
//! (TDS), and for computed columns (Postgres): a computed column over a protected one is
//! masked whole, a column passed through is masked by its own name.
//!
//! Outputs are followed through derived tables, `WITH` queries and set operations (`UNION`:
//! each output reads what either side's does). Only what the statement itself proves is
//! reported: a recursive `WITH`, a table function, a `LATERAL` subquery, `INTO`, `FOR
//! XML/JSON`, or anything else this module does not follow reports nothing (`None`), and the
//! caller treats every output as computed from anything the statement reads.

use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, ObjectName, Query, Select,
    SelectItem, SelectItemQualifiedWildcardKind, SetExpr, Statement, TableAlias, TableFactor,
    TableWithJoins, Visit, Visitor, WildcardAdditionalOptions,
};

use crate::action::Output;

/// Queries nested deeper than this (derived tables in derived tables...) are not followed.
const MAX_DEPTH: usize = 32;

/// An output under the name an enclosing query refers to it by.
type Named = (String, Output);

/// A relation of `FROM` as the query sees it.
enum Rel {
    /// A table or view by name: `by` is its alias, else the last part of its name.
    Table { by: String, table: String },
    /// A derived table or `WITH` query, and its outputs.
    Derived { by: String, outputs: Vec<Named> },
}

impl Rel {
    fn by(&self) -> &str {
        match self {
            Rel::Table { by, .. } | Rel::Derived { by, .. } => by,
        }
    }
}

/// The outputs of `stmt` when it is a query this module can follow; `None` otherwise.
pub(crate) fn outputs(stmt: &Statement) -> Option<Vec<Output>> {
    let Statement::Query(q) = stmt else {
        return None;
    };
    Some(query(q, &[], 0)?.into_iter().map(|(_, o)| o).collect())
}

fn lower(i: &Ident) -> String {
    i.value.to_lowercase()
}

fn query(q: &Query, ctes: &[(String, Vec<Named>)], depth: usize) -> Option<Vec<Named>> {
    if depth > MAX_DEPTH || q.for_clause.is_some() || !q.pipe_operators.is_empty() {
        return None;
    }
    let mut scope = ctes.to_vec();
    if let Some(with) = &q.with {
        if with.recursive {
            return None;
        }
        for cte in &with.cte_tables {
            let outs = query(&cte.query, &scope, depth + 1)?;
            scope.push((lower(&cte.alias.name), renamed(outs, &cte.alias)?));
        }
    }
    set_expr(&q.body, &scope, depth)
}

fn set_expr(body: &SetExpr, ctes: &[(String, Vec<Named>)], depth: usize) -> Option<Vec<Named>> {
    match body {
        SetExpr::Select(s) => select(s, ctes, depth),
        SetExpr::Query(q) => query(q, ctes, depth + 1),
        SetExpr::SetOperation { left, right, .. } => {
            let l = set_expr(left, ctes, depth + 1)?;
            let r = set_expr(right, ctes, depth + 1)?;
            if l.len() != r.len() {
                return None;
            }
            Some(
                l.into_iter()
                    .zip(r)
                    .map(|((n, a), (_, b))| (n, merge(a, b)))
                    .collect(),
            )
        }
        SetExpr::Values(v) => {
            let width = v.rows.first().map_or(0, |r| r.content.len());
            let mut outs = vec![computed(None, Reads::default()); width];
            for row in &v.rows {
                for (o, e) in outs.iter_mut().zip(&row.content) {
                    *o = merge(o.clone(), resolve(e, None, &[]).1);
                }
            }
            Some(outs.into_iter().map(|o| (String::new(), o)).collect())
        }
        _ => None,
    }
}

/// An output reading what either `a` or `b` reads (one column of a set operation): the same
/// table column on both sides stays that column.
fn merge(a: Output, b: Output) -> Output {
    if let (Output::Column { name: x, .. }, Output::Column { name: y, .. }) = (&a, &b)
        && x == y
    {
        return a;
    }
    let mut r = Reads::default();
    for o in [a, b] {
        r.add(o);
    }
    computed(None, r)
}

/// Outputs under the column names of a `WITH` or derived table alias (`s(a, b)`).
fn renamed(outs: Vec<Named>, alias: &TableAlias) -> Option<Vec<Named>> {
    if alias.columns.is_empty() {
        return Some(outs);
    }
    if alias.columns.len() > outs.len() {
        return None;
    }
    let mut outs = outs;
    for ((name, o), c) in outs.iter_mut().zip(&alias.columns) {
        *name = lower(&c.name);
        match o {
            Output::Column { name: base, alias } => {
                *alias = (base != name).then(|| name.clone());
            }
            Output::Expr { alias, .. } => *alias = Some(name.clone()),
            Output::Wildcard => {}
        }
    }
    Some(outs)
}

fn select(s: &Select, ctes: &[(String, Vec<Named>)], depth: usize) -> Option<Vec<Named>> {
    if s.into.is_some() {
        return None;
    }
    let mut rels = Vec::new();
    for t in &s.from {
        relations(t, ctes, depth, &mut rels)?;
    }
    let mut out = Vec::new();
    for item in &s.projection {
        match item {
            SelectItem::UnnamedExpr(e) => out.push(resolve(e, None, &rels)),
            SelectItem::ExprWithAlias { expr, alias } => {
                out.push(resolve(expr, Some(lower(alias)), &rels));
            }
            SelectItem::Wildcard(o) => {
                plain_wildcard(o)?;
                star(rels.iter(), &mut out);
            }
            SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(n), o) => {
                plain_wildcard(o)?;
                let q = n.0.last().and_then(|p| p.as_ident()).map(lower)?;
                star(rels.iter().filter(|r| r.by() == q), &mut out);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// A `*` over `rels`: a derived table's outputs one by one; a table's columns, unknown here,
/// as [`Output::Wildcard`].
fn star<'a>(rels: impl Iterator<Item = &'a Rel>, out: &mut Vec<Named>) {
    for r in rels {
        match r {
            Rel::Table { .. } => {
                if !matches!(out.last(), Some((_, Output::Wildcard))) {
                    out.push((String::new(), Output::Wildcard));
                }
            }
            Rel::Derived { outputs, .. } => out.extend(outputs.iter().cloned()),
        }
    }
}

/// A bare `*`; one that renames or replaces columns is not followed.
fn plain_wildcard(o: &WildcardAdditionalOptions) -> Option<()> {
    (o.opt_replace.is_none() && o.opt_rename.is_none() && o.opt_alias.is_none()).then_some(())
}

/// The relations of one `FROM` item and its joins.
fn relations(
    t: &TableWithJoins,
    ctes: &[(String, Vec<Named>)],
    depth: usize,
    rels: &mut Vec<Rel>,
) -> Option<()> {
    for f in std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)) {
        match f {
            TableFactor::Table {
                name, alias, args, ..
            } if args.is_none() => {
                let parts: Vec<String> = name
                    .0
                    .iter()
                    .map(|p| p.as_ident().map(lower))
                    .collect::<Option<_>>()?;
                let last = parts.last().cloned().unwrap_or_default();
                let by = alias
                    .as_ref()
                    .map_or_else(|| last.clone(), |a| lower(&a.name));
                let cte = (parts.len() == 1)
                    .then(|| ctes.iter().rev().find(|(n, _)| *n == last))
                    .flatten();
                rels.push(match cte {
                    Some((_, outs)) => Rel::Derived {
                        by,
                        outputs: match alias {
                            Some(a) => renamed(outs.clone(), a)?,
                            None => outs.clone(),
                        },
                    },
                    None => Rel::Table {
                        by,
                        table: parts.join("."),
                    },
                });
            }
            TableFactor::Derived {
                lateral: false,
                subquery,
                alias,
                ..
            } => {
                let outs = query(subquery, ctes, depth + 1)?;
                let (by, outputs) = match alias {
                    Some(a) => (lower(&a.name), renamed(outs, a)?),
                    None => (String::new(), outs),
                };
                rels.push(Rel::Derived { by, outputs });
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias: None,
            } => relations(table_with_joins, ctes, depth + 1, rels)?,
            _ => return None,
        }
    }
    Some(())
}

/// The output of one select-list expression, under the name an enclosing query sees.
fn resolve(e: &Expr, alias: Option<String>, rels: &[Rel]) -> Named {
    let mut e = e;
    while let Expr::Nested(inner) = e {
        e = inner;
    }
    let direct = match e {
        Expr::Identifier(i) => Some(name_ref(None, &lower(i), rels)),
        Expr::CompoundIdentifier(parts) => match parts.as_slice() {
            [.., q, n] => Some(name_ref(Some(&lower(q)), &lower(n), rels)),
            _ => None,
        },
        _ => None,
    };
    let by_name = direct.is_some();
    let (own, out) = match direct {
        Some((own, out)) => (own, out),
        None => {
            let mut r = Reads {
                rels,
                ..Reads::default()
            };
            // The walk never breaks.
            let _ = e.visit(&mut r);
            let own = match e {
                Expr::Function(f) => f
                    .name
                    .0
                    .last()
                    .and_then(|p| p.as_ident())
                    .map(lower)
                    .unwrap_or_default(),
                _ => String::new(),
            };
            (own, computed(None, r))
        }
    };
    let name = alias.clone().unwrap_or(own);
    let out = match out {
        Output::Column { name: base, .. } => Output::Column {
            alias: (base != name).then(|| name.clone()),
            name: base,
        },
        Output::Expr {
            reads,
            opaque,
            rows,
            bare,
            ..
        } => Output::Expr {
            // A computed output referred to by name shows under that name; an unnamed
            // expression has none (SQL Server sends an empty column name for it).
            alias: alias.or_else(|| by_name.then(|| name.clone())),
            reads,
            opaque,
            rows,
            bare,
        },
        w => w,
    };
    (name, out)
}

/// What a column name refers to: a derived table's output, a relation's whole row, or a
/// table's column. Returns the name it shows under, and the output.
fn name_ref(qualifier: Option<&str>, n: &str, rels: &[Rel]) -> Named {
    let derived = rels.iter().find_map(|r| match r {
        Rel::Derived { by, outputs } if qualifier.is_none_or(|q| q == by) => outputs
            .iter()
            .find(|(name, _)| name == n)
            .map(|(_, o)| o.clone()),
        _ => None,
    });
    if let Some(o) = derived {
        return (n.to_string(), o);
    }
    if qualifier.is_none()
        && let Some(rel) = rels.iter().find(|r| r.by() == n)
    {
        let mut r = Reads::default();
        r.whole(rel);
        let mut out = computed(None, r);
        // The table's row as stored, typed as the table's row type.
        if let (Rel::Table { .. }, Output::Expr { bare, .. }) = (rel, &mut out) {
            *bare = true;
        }
        return (n.to_string(), out);
    }
    (
        n.to_string(),
        Output::Column {
            name: n.to_string(),
            alias: None,
        },
    )
}

fn computed(alias: Option<String>, mut r: Reads<'_>) -> Output {
    r.names.sort();
    r.names.dedup();
    r.rows.sort();
    r.rows.dedup();
    Output::Expr {
        alias,
        reads: r.names,
        opaque: r.opaque,
        rows: r.rows,
        bare: false,
    }
}

/// The columns an expression reads, the tables whose whole rows it reads, and whether it
/// holds a query.
#[derive(Default)]
struct Reads<'a> {
    rels: &'a [Rel],
    names: Vec<String>,
    rows: Vec<String>,
    opaque: bool,
}

impl Reads<'_> {
    /// What `o` reads is read.
    fn add(&mut self, o: Output) {
        match o {
            Output::Column { name, .. } => self.names.push(name),
            Output::Expr {
                reads,
                rows,
                opaque,
                ..
            } => {
                self.names.extend(reads);
                self.rows.extend(rows);
                self.opaque |= opaque;
            }
            Output::Wildcard => self.opaque = true,
        }
    }

    /// The whole row of `rel` is read.
    fn whole(&mut self, rel: &Rel) {
        match rel {
            Rel::Table { table, .. } => self.rows.push(table.clone()),
            Rel::Derived { outputs, .. } => {
                for (_, o) in outputs {
                    self.add(o.clone());
                }
            }
        }
    }

    /// `c.*`: the whole row of relation `c`.
    fn whole_of(&mut self, name: &ObjectName) {
        let rels = self.rels;
        if let Some(q) = name.0.last().and_then(|p| p.as_ident()).map(lower)
            && let Some(rel) = rels.iter().find(|r| r.by() == q)
        {
            self.whole(rel);
        }
    }
}

fn is_count(name: &ObjectName) -> bool {
    name.0
        .last()
        .and_then(|p| p.as_ident())
        .is_some_and(|i| i.value.eq_ignore_ascii_case("count"))
}

impl Visitor for Reads<'_> {
    type Break = ();

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        let rels = self.rels;
        match e {
            Expr::Identifier(i) => self.add(name_ref(None, &lower(i), rels).1),
            Expr::CompoundIdentifier(parts) => {
                if let [.., q, n] = parts.as_slice() {
                    self.add(name_ref(Some(&lower(q)), &lower(n), rels).1);
                }
            }
            Expr::QualifiedWildcard(name, _) => self.whole_of(name),
            Expr::Function(f) => {
                let FunctionArguments::List(list) = &f.args else {
                    return ControlFlow::Continue(());
                };
                for arg in &list.args {
                    let (FunctionArg::Unnamed(a)
                    | FunctionArg::Named { arg: a, .. }
                    | FunctionArg::ExprNamed { arg: a, .. }) = arg;
                    match a {
                        FunctionArgExpr::QualifiedWildcard(name) => self.whole_of(name),
                        // `count(*)` counts rows; any other `f(*)` may read them all.
                        FunctionArgExpr::Wildcard | FunctionArgExpr::WildcardWithOptions(_)
                            if !is_count(&f.name) =>
                        {
                            for rel in rels {
                                self.whole(rel);
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.opaque = true;
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
#[path = "lineage_tests.rs"]
mod tests;
