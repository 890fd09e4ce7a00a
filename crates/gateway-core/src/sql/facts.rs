//! What the target's catalog says about names a statement trusts: which allow-listed
//! function names also exist as user functions, which operator symbols and cast target types
//! are backed by user functions.
//!
//! Classification is cached by shape and knows nothing of the target, so it records what a
//! statement resolves by name only ([`ByName`]); the relay looks the facts up once per
//! target (and again after DDL or a minute) and [`CatalogFacts::apply`] turns a statement
//! that may reach a user function into a `Call` naming it. Without facts (the lookup failed)
//! everything trusted by name counts as a call: fail closed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::action::{ByName, SqlKind, SqlStatement};

/// Entries of one kind kept at most; a catalog with more is treated as unknown.
pub const MAX_FACTS: usize = 100_000;

/// User functions, operators and casts of one target (names only, bounded).
#[derive(Debug, Default, Clone)]
pub struct CatalogFacts {
    /// Names of functions outside `pg_catalog` and `information_schema`.
    functions: HashSet<Box<str>>,
    /// Symbols of operators outside `pg_catalog`, with the functions behind them.
    operators: HashMap<Box<str>, Vec<Box<str>>>,
    /// Casts backed by functions outside `pg_catalog`: target type name, function.
    casts: Vec<(Box<str>, Box<str>)>,
    /// One of those casts applies without being written (implicit or in assignment).
    implicit_cast: Option<Box<str>>,
}

impl CatalogFacts {
    /// Records a user function's name; `false` past the bound.
    pub fn add_function(&mut self, name: &str) -> bool {
        self.functions.insert(name.into());
        self.functions.len() <= MAX_FACTS
    }

    /// Records a user operator and its function; `false` past the bound.
    pub fn add_operator(&mut self, symbol: &str, function: &str) -> bool {
        let fs = self.operators.entry(symbol.into()).or_default();
        if !fs.iter().any(|f| &**f == function) {
            fs.push(function.into());
        }
        let within = fs.len() <= MAX_FACTS;
        within && self.operators.len() <= MAX_FACTS
    }

    /// Records a cast to `target` (type name) backed by a user `function`; `implicit` when
    /// PostgreSQL may apply it unwritten. `false` past the bound.
    pub fn add_cast(&mut self, target: &str, function: &str, implicit: bool) -> bool {
        if implicit && self.implicit_cast.is_none() {
            self.implicit_cast = Some(function.into());
        }
        self.casts.push((target.into(), function.into()));
        self.casts.len() <= MAX_FACTS
    }

    /// Whether no user function can stand behind a name a statement trusts.
    pub fn is_empty(&self) -> bool {
        self.functions.is_empty() && self.operators.is_empty() && self.casts.is_empty()
    }

    /// The user functions `by` may reach; empty when none.
    fn reached(&self, by: &ByName) -> Vec<String> {
        let mut out = Vec::new();
        for f in by.functions.iter().chain(&by.attributes) {
            if self.functions.contains(f.as_str()) {
                out.push(f.clone());
            }
        }
        for o in &by.operators {
            if let Some(fs) = self.operators.get(o.as_str()) {
                out.extend(fs.iter().map(|f| f.to_string()));
            }
        }
        for (target, f) in &self.casts {
            if by
                .casts
                .iter()
                .chain(&by.functions)
                .any(|c| **c == **target)
            {
                out.push(f.to_string());
            }
        }
        if let Some(f) = &self.implicit_cast
            && !by.is_empty()
        {
            out.push(f.to_string());
        }
        out
    }

    /// Whether `by` may reach a user function (what [`Self::reached`] finds, without
    /// allocating).
    fn touches(&self, by: &ByName) -> bool {
        by.functions
            .iter()
            .chain(&by.attributes)
            .any(|f| self.functions.contains(f.as_str()))
            || by
                .operators
                .iter()
                .any(|o| self.operators.contains_key(o.as_str()))
            || self.casts.iter().any(|(target, _)| {
                by.casts
                    .iter()
                    .chain(&by.functions)
                    .any(|c| **c == **target)
            })
            || (self.implicit_cast.is_some() && !by.is_empty())
    }

    /// `statements` as decided with `facts` (`None`: the catalog could not say), or `None`
    /// when that changes nothing, which is found without allocating.
    pub fn apply(
        facts: Option<&CatalogFacts>,
        statements: &[Arc<SqlStatement>],
    ) -> Option<Arc<[Arc<SqlStatement>]>> {
        let touched = |s: &Arc<SqlStatement>| match facts {
            Some(f) => f.touches(&s.by_name),
            None => !s.by_name.is_empty(),
        };
        if facts.is_some_and(CatalogFacts::is_empty) || !statements.iter().any(touched) {
            return None;
        }
        let adjusted = statements
            .iter()
            .map(|s| {
                let reached = match facts {
                    Some(f) => f.reached(&s.by_name),
                    None => unverified(&s.by_name),
                };
                if reached.is_empty() {
                    return s.clone();
                }
                let mut s = SqlStatement::clone(s);
                s.functions.extend(reached);
                s.functions.sort();
                s.functions.dedup();
                s.kind = s.kind.max(SqlKind::Call);
                Arc::new(s)
            })
            .collect();
        Some(adjusted)
    }
}

/// Everything trusted by name, as it would be named if it were a user function.
fn unverified(by: &ByName) -> Vec<String> {
    let ops = by.operators.iter().map(|o| format!("operator({o})"));
    let casts = by.casts.iter().map(|c| format!("cast({c})"));
    by.functions
        .iter()
        .chain(&by.attributes)
        .cloned()
        .chain(ops)
        .chain(casts)
        .collect()
}
