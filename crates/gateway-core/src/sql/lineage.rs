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
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectName, Query, Select, SelectItem,
    SetExpr, Statement, TableFactor, TableWithJoins, Visit, Visitor, WildcardAdditionalOptions,
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
    let from = relations(select);
    select.projection.iter().map(|i| output(i, &from)).collect()
}

/// The relations of `FROM`: the name each is referred to by (its alias, else its own last
/// name part), and the table name as written.
fn relations(select: &Select) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for t in &select.from {
        for f in std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)) {
            if let TableFactor::Table { name, alias, .. } = f {
                let parts: Vec<String> = name
                    .0
                    .iter()
                    .filter_map(|p| p.as_ident().map(|i| i.value.to_lowercase()))
                    .collect();
                let table = parts.join(".");
                let by = match alias {
                    Some(a) => a.name.value.to_lowercase(),
                    None => parts.last().cloned().unwrap_or_default(),
                };
                out.push((by, table));
            }
        }
    }
    out
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

fn output(item: &SelectItem, from: &[(String, String)]) -> Option<Output> {
    Some(match item {
        SelectItem::UnnamedExpr(e) => of_expr(e, None, from),
        SelectItem::ExprWithAlias { expr, alias } => {
            of_expr(expr, Some(alias.value.to_lowercase()), from)
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

fn of_expr(e: &Expr, alias: Option<String>, from: &[(String, String)]) -> Output {
    let mut e = e;
    while let Expr::Nested(inner) = e {
        e = inner;
    }
    let name = match e {
        Expr::Identifier(i) => Some(&i.value),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| &i.value),
        _ => None,
    };
    // A bare name that is also a relation's name may be that relation's whole row.
    let row = |n: &str| from.iter().find(|(by, _)| by == n).map(|(_, t)| t.clone());
    match name {
        Some(n) if matches!(e, Expr::Identifier(_)) && row(&n.to_lowercase()).is_some() => {
            Output::Expr {
                alias,
                reads: vec![n.to_lowercase()],
                opaque: false,
                rows: row(&n.to_lowercase()).into_iter().collect(),
            }
        }
        Some(n) => Output::Column {
            name: n.to_lowercase(),
            alias,
        },
        None => {
            let mut reads = Reads {
                from,
                ..Reads::default()
            };
            // The walk never breaks.
            let _ = e.visit(&mut reads);
            reads.names.sort();
            reads.names.dedup();
            reads.rows.sort();
            reads.rows.dedup();
            Output::Expr {
                alias,
                reads: reads.names,
                opaque: reads.opaque,
                rows: reads.rows,
            }
        }
    }
}

/// The columns an expression reads, the relations whose whole rows it reads, and whether it
/// holds a query.
#[derive(Default)]
struct Reads<'a> {
    from: &'a [(String, String)],
    names: Vec<String>,
    rows: Vec<String>,
    opaque: bool,
}

impl Reads<'_> {
    fn row(&mut self, name: &str) {
        if let Some((_, t)) = self.from.iter().find(|(by, _)| by == name) {
            self.rows.push(t.clone());
        }
    }

    /// `c.*`: the whole row of relation `c`.
    fn row_of(&mut self, name: &ObjectName) {
        if let Some(last) = name.0.last().and_then(|p| p.as_ident()) {
            self.row(&last.value.to_lowercase());
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
        match e {
            Expr::Identifier(i) => {
                let n = i.value.to_lowercase();
                self.row(&n);
                self.names.push(n);
            }
            Expr::QualifiedWildcard(name, _) => self.row_of(name),
            Expr::Function(f) => {
                let FunctionArguments::List(list) = &f.args else {
                    return ControlFlow::Continue(());
                };
                for arg in &list.args {
                    let (FunctionArg::Unnamed(a)
                    | FunctionArg::Named { arg: a, .. }
                    | FunctionArg::ExprNamed { arg: a, .. }) = arg;
                    match a {
                        FunctionArgExpr::QualifiedWildcard(name) => self.row_of(name),
                        // `count(*)` counts rows; any other `f(*)` may read them all.
                        FunctionArgExpr::Wildcard | FunctionArgExpr::WildcardWithOptions(_)
                            if !is_count(&f.name) =>
                        {
                            let all: Vec<String> =
                                self.from.iter().map(|(_, t)| t.clone()).collect();
                            self.rows.extend(all);
                        }
                        _ => {}
                    }
                }
            }
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
            rows: Vec::new(),
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
