//! The output columns of a plain `SELECT`, read from the statement alone: which are columns
//! of the tables in `FROM` (perhaps renamed) and which are computed. Masking uses it where the
//! wire does not say where a result column comes from (TDS): a computed column over a
//! protected one is masked whole, a column passed through is masked by its own name.
//!
//! Only what the statement itself proves is reported. A query with a `WITH`, a set operation,
//! a derived table, a table function, `INTO` or `FOR XML/JSON` reports nothing (`None`), and
//! the caller treats every output as computed.

use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, Query, Select, SelectItem, SetExpr, Statement, TableFactor, TableWithJoins, Visit,
    Visitor, WildcardAdditionalOptions,
};

use crate::action::Output;

/// The outputs of `stmt` when it is a plain `SELECT` over tables; `None` otherwise.
pub(crate) fn outputs(stmt: &Statement) -> Option<Vec<Output>> {
    let Statement::Query(q) = stmt else {
        return None;
    };
    let select = plain_select(q)?;
    if select.into.is_some() || !select.from.iter().all(only_tables) {
        return None;
    }
    select.projection.iter().map(output).collect()
}

/// The one query block of `q`, when there is nothing around it that could rename or compute.
fn plain_select(q: &Query) -> Option<&Select> {
    if q.with.is_some() || q.for_clause.is_some() || !q.pipe_operators.is_empty() {
        return None;
    }
    match q.body.as_ref() {
        SetExpr::Select(s) => Some(s),
        SetExpr::Query(inner) => plain_select(inner),
        _ => None,
    }
}

/// `FROM` items that are tables (or views) by name, joined to tables by name.
fn only_tables(t: &TableWithJoins) -> bool {
    let table = |f: &TableFactor| matches!(f, TableFactor::Table { args: None, .. });
    table(&t.relation) && t.joins.iter().all(|j| table(&j.relation))
}

fn output(item: &SelectItem) -> Option<Output> {
    Some(match item {
        SelectItem::UnnamedExpr(e) => of_expr(e, None),
        SelectItem::ExprWithAlias { expr, alias } => {
            of_expr(expr, Some(alias.value.to_lowercase()))
        }
        SelectItem::Wildcard(o) => wildcard(o)?,
        SelectItem::QualifiedWildcard(_, o) => wildcard(o)?,
        SelectItem::ExprWithAliases { .. } => return None,
    })
}

/// A bare `*`; one that renames or replaces columns is not reported.
fn wildcard(o: &WildcardAdditionalOptions) -> Option<Output> {
    (o.opt_replace.is_none() && o.opt_rename.is_none() && o.opt_alias.is_none())
        .then_some(Output::Wildcard)
}

fn of_expr(e: &Expr, alias: Option<String>) -> Output {
    let mut e = e;
    while let Expr::Nested(inner) = e {
        e = inner;
    }
    let name = match e {
        Expr::Identifier(i) => Some(&i.value),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| &i.value),
        _ => None,
    };
    match name {
        Some(n) => Output::Column {
            name: n.to_lowercase(),
            alias,
        },
        None => {
            let mut reads = Reads::default();
            // The walk never breaks.
            let _ = e.visit(&mut reads);
            reads.names.sort();
            reads.names.dedup();
            Output::Expr {
                alias,
                reads: reads.names,
                opaque: reads.opaque,
            }
        }
    }
}

/// The columns an expression reads, and whether it holds a query.
#[derive(Default)]
struct Reads {
    names: Vec<String>,
    opaque: bool,
}

impl Visitor for Reads {
    type Break = ();

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        match e {
            Expr::Identifier(i) => self.names.push(i.value.to_lowercase()),
            Expr::CompoundIdentifier(parts) => {
                if let Some(i) = parts.last() {
                    self.names.push(i.value.to_lowercase());
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
mod tests {
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
        }
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
    fn what_could_rename_or_compute_reports_nothing() {
        for sql in [
            "with x as (select upper(card) c from t) select c from x",
            "select c from (select upper(card) c from t) s",
            "select card from a union select name from b",
            "select card into #t from customers",
            "insert into t select card from s",
            "update t set a = 1",
        ] {
            assert_eq!(of(sql), None, "{sql}");
        }
        let ms = Parser::parse_sql(&MsSqlDialect {}, "select card from t for json path");
        if let Ok(s) = ms {
            assert_eq!(outputs(&s[0]), None);
        }
    }
}
