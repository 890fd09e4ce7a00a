//! Walks one parsed statement: worst effect, tables touched, unbounded UPDATE/DELETE.

use std::ops::ControlFlow;

use sqlparser::ast::{
    AccessExpr, CopySource, Expr, FromTable, Ident, ObjectName, ObjectType, Query, Select, SetExpr,
    Statement, TableFactor, TableObject, TableWithJoins, Visit, Visitor,
};

use super::Dialect;
use super::kinds::{
    effect_by_name, explain_runs, function_kind, pg_ident, pg_name_parts, set_config_kind,
    statement_kind, table_names,
};
use super::kinds_tsql;
use crate::action::SqlKind;

/// What one statement does.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    pub kind: Option<SqlKind>,
    pub tables: Vec<String>,
    pub unbounded: bool,
    /// Functions called that are not known to be free of side effects.
    pub functions: Vec<String>,
}

/// Classifies one statement, nested parts included, by the rules of `dialect`.
pub(crate) fn analyse(stmt: &Statement, dialect: Dialect) -> Effects {
    let mut w = Walk {
        dialect,
        ..Walk::default()
    };
    // The walk never breaks.
    let _ = stmt.visit(&mut w);
    let mut fx = w.fx;
    fx.tables.sort();
    fx.tables.dedup();
    fx.functions.sort();
    fx.functions.dedup();
    fx
}

/// CTE names introduced by one query, and how far its WITH list has been visited.
#[derive(Debug, Default)]
struct Frame {
    names: Vec<String>,
    recursive: bool,
    /// CTE bodies fully visited so far; equals `names.len()` once the main body starts.
    done: usize,
    /// This query is a CTE body of the frame below it.
    is_cte_body: bool,
}

impl Frame {
    /// The CTE names a reference at this point can see: in a non-recursive WITH, a body sees
    /// only the CTEs before it.
    fn visible(&self) -> &[String] {
        if self.recursive || self.done >= self.names.len() {
            &self.names
        } else {
            &self.names[..self.done]
        }
    }
}

/// Whether `.field` of `root` selects a field of a built-in function's composite result:
/// `(information_schema._pg_expandarray(a)).n`, which drivers send to read the catalog.
fn is_builtin_field(root: &Expr, field: &str) -> bool {
    let Expr::Nested(inner) = root else {
        return false;
    };
    let Expr::Function(f) = inner.as_ref() else {
        return false;
    };
    if function_kind(&f.name) != Some(SqlKind::Read) {
        return false;
    }
    let fields: &[&str] = match pg_name_parts(&f.name).and_then(|mut p| p.pop()).as_deref() {
        Some("_pg_expandarray") => &["x", "n"],
        Some("pg_identify_object") => &["type", "schema", "name", "identity"],
        Some("pg_identify_object_as_address") => &["type", "object_names", "object_args"],
        _ => &[],
    };
    fields.contains(&field)
}

#[derive(Default)]
struct Walk {
    dialect: Dialect,
    fx: Effects,
    frames: Vec<Frame>,
    /// Depth of EXPLAIN without ANALYZE: its statement is planned, not run.
    plan_only: usize,
    /// Table-function names, which the relation hook must not count as tables.
    function_names: Vec<*const ObjectName>,
}

impl Walk {
    fn raise(&mut self, k: SqlKind) {
        self.fx.kind = Some(self.fx.kind.map_or(k, |old| old.max(k)));
    }

    /// An identifier as the dialect resolves it.
    fn ident(&self, ident: &Ident) -> String {
        match self.dialect {
            Dialect::Postgres => pg_ident(ident),
            Dialect::TSql => kinds_tsql::tsql_ident(ident),
        }
    }

    /// The parts of a name as the dialect resolves them; `None` for non-identifier parts.
    fn name_parts(&self, name: &ObjectName) -> Option<Vec<String>> {
        match self.dialect {
            Dialect::Postgres => pg_name_parts(name),
            Dialect::TSql => kinds_tsql::tsql_name_parts(name),
        }
    }

    /// A call of `name` (`in_from`: in a FROM list): its kind if known, else `Call` with the
    /// name recorded.
    fn call(&mut self, name: &ObjectName, in_from: bool) {
        let known = match self.dialect {
            Dialect::Postgres => function_kind(name),
            Dialect::TSql => kinds_tsql::function_kind(name, in_from),
        };
        match known {
            Some(kind) => self.raise(kind),
            None => {
                let written = match self.name_parts(name) {
                    Some(p) => p.join("."),
                    None => name.to_string().to_lowercase(),
                };
                self.fx.functions.push(written);
                self.raise(SqlKind::Call);
            }
        }
    }

    fn add_table(&mut self, name: &ObjectName) {
        let parts = match self.name_parts(name) {
            Some(p) => p,
            None => vec![name.to_string()],
        };
        if self.dialect == Dialect::TSql {
            // `server.db.schema.t` reads another server through a linked server, like
            // OPENQUERY. `db..t` has an empty schema part: record `db..t` and `t`.
            if parts.len() > 3 {
                self.raise(SqlKind::Admin);
            }
            let names = table_names(&parts).filter(|n| !n.starts_with('.'));
            self.fx.tables.extend(names.collect::<Vec<_>>());
            return;
        }
        self.fx.tables.extend(table_names(&parts));
    }

    fn add_tables_with_joins(&mut self, twj: &[TableWithJoins]) {
        for t in twj {
            if let TableFactor::Table { name, .. } = &t.relation {
                self.add_table(name);
            }
        }
    }

    /// A single-part name that resolves to a CTE in scope rather than a table.
    fn is_cte(&self, name: &ObjectName) -> bool {
        let [part] = name.0.as_slice() else {
            return false;
        };
        let Some(ident) = part.as_ident() else {
            return false;
        };
        let n = self.ident(ident);
        self.frames.iter().any(|f| f.visible().contains(&n))
    }

    /// `TABLE t` inside a query.
    fn refuse_table_bodies(&mut self, body: &SetExpr) {
        match body {
            // sqlparser's `TABLE name` parser consumes two tokens past the name whatever
            // they are, so a nested TABLE is not trusted; a top-level one is read by
            // the scanner-based fallback instead.
            SetExpr::Table(_) => self.raise(SqlKind::Unknown),
            SetExpr::SetOperation { left, right, .. } => {
                self.refuse_table_bodies(left);
                self.refuse_table_bodies(right);
            }
            _ => {}
        }
    }

    /// Targets of data-changing statements. They always name real tables (a CTE cannot be a
    /// DML target), so they are recorded before CTE scoping can hide them.
    fn add_targets(&mut self, stmt: &Statement) {
        match stmt {
            Statement::Insert(i) => {
                if let TableObject::TableName(n) = &i.table {
                    self.add_table(n);
                }
            }
            Statement::Update(u) => self.add_tables_with_joins(std::slice::from_ref(&u.table)),
            Statement::Delete(d) => {
                for n in &d.tables {
                    self.add_table(n);
                }
                match &d.from {
                    FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => {
                        self.add_tables_with_joins(t)
                    }
                }
            }
            Statement::Merge(m) => {
                if let TableFactor::Table { name, .. } = &m.table {
                    self.add_table(name);
                }
            }
            Statement::Drop {
                object_type:
                    ObjectType::Table
                    | ObjectType::View
                    | ObjectType::MaterializedView
                    | ObjectType::Sequence,
                names,
                ..
            } => {
                for n in names {
                    self.add_table(n);
                }
            }
            Statement::Comment { object_name, .. } => self.add_table(object_name),
            Statement::Copy {
                source: CopySource::Table { table_name, .. },
                ..
            } => self.add_table(table_name),
            _ => {}
        }
    }
}

impl Visitor for Walk {
    type Break = ();

    fn pre_visit_statement(&mut self, stmt: &Statement) -> ControlFlow<()> {
        self.add_targets(stmt);
        if self.plan_only == 0 {
            self.raise(match self.dialect {
                Dialect::Postgres => statement_kind(stmt),
                Dialect::TSql => kinds_tsql::statement_kind(stmt),
            });
            match stmt {
                Statement::Update(u) if u.selection.is_none() => self.fx.unbounded = true,
                Statement::Delete(d) if d.selection.is_none() => self.fx.unbounded = true,
                _ => {}
            }
        }
        if let Statement::Explain {
            analyze, options, ..
        } = stmt
            && self.dialect == Dialect::Postgres
            && !explain_runs(*analyze, options.as_deref())
        {
            self.plan_only += 1;
        }
        ControlFlow::Continue(())
    }

    fn post_visit_statement(&mut self, stmt: &Statement) -> ControlFlow<()> {
        if let Statement::Explain {
            analyze, options, ..
        } = stmt
            && self.dialect == Dialect::Postgres
            && !explain_runs(*analyze, options.as_deref())
        {
            self.plan_only = self.plan_only.saturating_sub(1);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        let is_cte_body = self
            .frames
            .last()
            .is_some_and(|parent| parent.done < parent.names.len());
        let mut frame = Frame {
            is_cte_body,
            ..Frame::default()
        };
        if let Some(with) = &q.with {
            frame.recursive = with.recursive;
            frame.names = with
                .cte_tables
                .iter()
                .map(|c| self.ident(&c.alias.name))
                .collect();
        }
        self.frames.push(frame);
        self.refuse_table_bodies(&q.body);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _q: &Query) -> ControlFlow<()> {
        if let Some(f) = self.frames.pop()
            && f.is_cte_body
            && let Some(parent) = self.frames.last_mut()
        {
            parent.done += 1;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<()> {
        if let Some(into) = &s.into {
            for target in &into.targets {
                match target {
                    Expr::Identifier(i) => self.add_table(&ObjectName::from(vec![i.clone()])),
                    Expr::CompoundIdentifier(v) => self.add_table(&ObjectName::from(v.clone())),
                    _ => self.raise(SqlKind::Unknown),
                }
            }
            if self.plan_only == 0 {
                self.raise(SqlKind::Write);
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> ControlFlow<()> {
        match tf {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            } => {
                self.function_names.push(name as *const ObjectName);
                self.call(name, true);
            }
            TableFactor::Function { name, .. } => {
                self.function_names.push(name as *const ObjectName);
                self.call(name, true);
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<()> {
        let me = name as *const ObjectName;
        if self.function_names.contains(&me) {
            return ControlFlow::Continue(());
        }
        if !self.is_cte(name) {
            self.add_table(name);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        // Functions are checked even under plain EXPLAIN: planning can evaluate them.
        match e {
            Expr::Function(f) => match set_config_kind(f) {
                Some(kind) if self.dialect == Dialect::Postgres => self.raise(kind),
                _ => self.call(&f.name, false),
            },
            // `(x).f` is `f(x)` when `x` has no field `f`: every name selected from a value
            // is a call unless it is a built-in free of side effects.
            Expr::CompoundFieldAccess { root, access_chain } => {
                for (i, access) in access_chain.iter().enumerate() {
                    if let AccessExpr::Dot(Expr::Identifier(field)) = access
                        && !(i == 0
                            && self.dialect == Dialect::Postgres
                            && is_builtin_field(root, &pg_ident(field)))
                    {
                        self.call(&ObjectName::from(vec![field.clone()]), false);
                    }
                }
            }
            // `t.f` is `f(t)` when `t` has no column `f`. Column names are not known here,
            // so only names of functions with known effects count.
            Expr::CompoundIdentifier(parts)
                if parts.len() > 1 && self.dialect == Dialect::Postgres =>
            {
                if let Some(kind) = parts.last().and_then(|p| effect_by_name(&pg_ident(p))) {
                    self.raise(kind);
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}
