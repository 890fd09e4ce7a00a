//! Masking of result values in flight, protocol-neutral. Compiled once from the `[[masking]]`
//! blocks ([`MaskingEngine`]); narrowed to what applies to one session's connection and groups
//! ([`SessionMasks`]); planned once per result shape ([`ResultMask`]); then applied one value at
//! a time on the hot path ([`ResultMask::mask`]), which neither allocates nor touches the output
//! buffer when nothing matches. Counts name what fired, never the values.

mod counts;
mod detectors;
mod json;
mod json_path;
mod key;
#[cfg(test)]
mod precision_tests;
mod render;
mod rewriter;
mod rules;
mod scan;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use counts::{Detector, KIND_COUNT, Kind, MaskCounts};
pub use json_path::JsonPath;
pub use key::{KEY_LEN, load_or_create_key};

use crate::action::{Output, SqlStatement};
use crate::config::{MaskStrategy, MaskingConfig};
use crate::error::{Error, Result};
use json::Why;
use render::{Keyed, Target, render};
use rewriter::Rewriter;
use rules::ColumnPattern;
use scan::{Scanner, Sink};

/// What a column's values are, as far as the caller can tell from the result's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TypeHint {
    /// Text-like (text, varchar, char, name, xml, citext, unknown, anything in text form the
    /// caller can't classify): scanned by the detectors; a value that starts with `{` or `[`
    /// is also treated as JSON, so `row_to_json(c)::text` is covered.
    Text,
    /// A JSON document (json, jsonb in text form): string values scanned, fields matching a
    /// column rule or naming a secret replaced whole; replacements stay valid JSON.
    Json,
    /// An integer or numeric column: only a whole value that is a card number is masked (to
    /// NULL), and a column rule makes it NULL.
    Numeric,
    /// Anything else (dates, booleans, uuid, bytea, binary-format values): never scanned; a
    /// column rule makes it NULL.
    Other,
}

/// A result column as the caller knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnRef<'a> {
    /// Originating table (`table` or `schema.table`); `None` for an expression or an origin
    /// the caller can't tell.
    pub table: Option<&'a str>,
    /// Column name (or the expression's output name).
    pub name: &'a str,
    /// What its values are.
    pub hint: TypeHint,
}

/// What to do with one column's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnPlan {
    /// Forward untouched.
    Pass,
    /// Run the detectors (the hint picks text, JSON or numeric handling).
    Scan(TypeHint),
    /// Replace every value: a column rule (index into [`SessionMasks::column_rule_names`])
    /// covers it. Non-text hints become NULL.
    Whole {
        /// The rule that covers the column.
        rule: usize,
        /// How the value is represented.
        hint: TypeHint,
    },
}

/// The outcome for one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Masked {
    /// Forward the original bytes; `out` was not touched.
    Unchanged,
    /// Send `out` instead (it was cleared and filled).
    Replaced,
    /// Send SQL NULL (the column's type can't hold a replacement text).
    Null,
}

/// A column rule as compiled: its pattern, strategy and config text (for audit).
#[derive(Debug, Clone)]
struct Rule {
    pattern: ColumnPattern,
    strategy: MaskStrategy,
}

/// One compiled `[[masking]]` block.
#[derive(Debug, Clone)]
struct Block {
    connections: Vec<String>,
    unmasked: Vec<String>,
    set: u8,
    strategies: [MaskStrategy; 6],
    rules: Vec<Rule>,
    rule_names: Vec<String>,
    json_paths: Vec<(JsonPath, String, MaskStrategy)>,
}

/// Problems in one block that do not need the rest of the config, each as a path suffix
/// (`.detectors[1]: …`) to put after `masking[i]`.
pub fn block_problems(b: &MaskingConfig) -> Vec<String> {
    let mut errs = Vec::new();
    if b.connections.is_empty() {
        errs.push(".connections: names no connection, so the block applies nowhere".into());
    }
    if b.detectors.is_empty() && b.columns.is_empty() && b.json_paths.is_empty() {
        errs.push(": names no detectors, columns or json_paths, so it masks nothing".into());
    }
    for (j, p) in b.json_paths.iter().enumerate() {
        if let Err(e) = JsonPath::parse(p) {
            errs.push(format!(".json_paths[{j}]: {e}"));
        }
    }
    let names = || {
        Detector::ALL
            .iter()
            .map(|d| d.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (j, d) in b.detectors.iter().enumerate() {
        if Detector::from_name(d).is_none() {
            errs.push(format!(
                ".detectors[{j}]: unknown detector `{d}` (expected one of {})",
                names()
            ));
        }
    }
    for (j, c) in b.columns.iter().enumerate() {
        if let Err(e) = ColumnPattern::parse(c) {
            errs.push(format!(".columns[{j}]: {e}"));
        }
    }
    for key in b.strategies.keys() {
        if key == "column" {
            if b.columns.is_empty() && b.json_paths.is_empty() {
                errs.push(format!(
                    ".strategies.{key}: this block has no `columns` to apply it to"
                ));
            }
        } else if Detector::from_name(key).is_none() {
            errs.push(format!(
                ".strategies.{key}: unknown detector `{key}` (expected one of {}, column)",
                names()
            ));
        } else if !b.detectors.contains(key) {
            errs.push(format!(
                ".strategies.{key}: `{key}` is not in this block's detectors"
            ));
        }
    }
    errs
}

/// How protective a strategy is, to pick one when two blocks disagree.
fn rank(s: MaskStrategy) -> u8 {
    match s {
        MaskStrategy::Partial => 0,
        MaskStrategy::Hash => 1,
        MaskStrategy::Redact => 2,
    }
}

/// Every `[[masking]]` block, compiled once; share it in an `Arc`.
#[derive(Debug)]
pub struct MaskingEngine {
    blocks: Vec<Block>,
    keyed: Keyed,
}

impl MaskingEngine {
    /// Compile the blocks. `hash_key` keys the `hash` strategy's tokens (keep it per gateway
    /// deployment and secret, or tokens can be brute-forced from small value spaces).
    pub fn new(blocks: &[MaskingConfig], hash_key: [u8; 32]) -> Result<MaskingEngine> {
        let mut compiled = Vec::with_capacity(blocks.len());
        let mut problems = Vec::new();
        for (i, b) in blocks.iter().enumerate() {
            let errs = block_problems(b);
            if !errs.is_empty() {
                problems.extend(errs.into_iter().map(|e| format!("masking[{i}]{e}")));
                continue;
            }
            let mut set = 0;
            let mut strategies = [b.strategy; 6];
            for d in b.detectors.iter().filter_map(|d| Detector::from_name(d)) {
                set |= d.bit();
                strategies[d.index()] = b.strategies.get(d.name()).copied().unwrap_or(b.strategy);
            }
            let col_strategy = b.strategies.get("column").copied().unwrap_or(b.strategy);
            let mut rules = Vec::new();
            for c in &b.columns {
                if let Ok(pattern) = ColumnPattern::parse(c) {
                    rules.push(Rule {
                        pattern,
                        strategy: col_strategy,
                    });
                }
            }
            compiled.push(Block {
                connections: b.connections.clone(),
                unmasked: b.unmasked_groups.clone(),
                set,
                strategies,
                rules,
                rule_names: b.columns.clone(),
                json_paths: b
                    .json_paths
                    .iter()
                    .filter_map(|p| {
                        JsonPath::parse(p)
                            .ok()
                            .map(|j| (j, p.clone(), col_strategy))
                    })
                    .collect(),
            });
        }
        if !problems.is_empty() {
            return Err(Error::Config(problems.join("; ")));
        }
        Ok(MaskingEngine {
            blocks: compiled,
            keyed: Keyed::new(&hash_key),
        })
    }

    /// What applies to a session on `connection` by an identity in `groups`; `None` when
    /// nothing does (the caller then does no masking work at all). A group listed in a block's
    /// `unmasked_groups` exempts the identity from that block only.
    pub fn for_session(&self, connection: &str, groups: &[String]) -> Option<Arc<SessionMasks>> {
        let mut set = 0u8;
        let mut strategies = [MaskStrategy::Partial; 6];
        let mut rules = Vec::new();
        let mut rule_names = Vec::new();
        let mut json_paths = Vec::new();
        for b in &self.blocks {
            if !b.connections.iter().any(|c| c == connection)
                || b.unmasked.iter().any(|g| groups.contains(g))
            {
                continue;
            }
            for d in Detector::ALL {
                if b.set & d.bit() != 0 {
                    let s = &mut strategies[d.index()];
                    if set & d.bit() == 0 || rank(b.strategies[d.index()]) > rank(*s) {
                        *s = b.strategies[d.index()];
                    }
                }
            }
            set |= b.set;
            rules.extend(b.rules.iter().cloned());
            rule_names.extend(b.rule_names.iter().cloned());
            json_paths.extend(b.json_paths.iter().cloned());
        }
        if set == 0 && rules.is_empty() && json_paths.is_empty() {
            return None;
        }
        // JSON path rules are counted after the column rules, under their own text.
        let first_path_rule = rule_names.len();
        rule_names.extend(json_paths.iter().map(|(_, text, _)| text.clone()));
        Some(Arc::new(SessionMasks {
            scanner: Scanner::new(set),
            strategies,
            rules,
            rule_names,
            json_paths,
            first_path_rule,
            keyed: self.keyed.clone(),
        }))
    }
}

/// The masking that applies to one session: the union of its blocks' detectors and rules.
#[derive(Debug)]
pub struct SessionMasks {
    scanner: Scanner,
    strategies: [MaskStrategy; 6],
    rules: Vec<Rule>,
    rule_names: Vec<String>,
    json_paths: Vec<(JsonPath, String, MaskStrategy)>,
    /// Index in `rule_names` (and counts) of the first JSON path rule.
    first_path_rule: usize,
    keyed: Keyed,
}

impl SessionMasks {
    /// Detectors in force.
    pub fn detectors(&self) -> impl Iterator<Item = Detector> + '_ {
        Detector::ALL.into_iter().filter(|d| self.scanner.has(*d))
    }

    /// The column rules in force, as written in config; [`ColumnPlan::Whole`]'s `rule` and
    /// [`MaskCounts::render`] index into this.
    pub fn column_rule_names(&self) -> &[String] {
        &self.rule_names
    }

    /// The first column rule covering column `name` of `table` (`schema.table`).
    pub fn rule_for(&self, table: &str, name: &str) -> Option<usize> {
        self.rules
            .iter()
            .position(|r| r.pattern.matches(Some(table), name))
    }

    /// The first column rule that may cover a column of one of `tables` (as the classifier
    /// names them): a statement reading them touches protected data, whatever it selects.
    pub fn touched_rule<'a>(&self, mut tables: impl Iterator<Item = &'a str>) -> Option<usize> {
        if self.rules.is_empty() {
            return None;
        }
        tables.find_map(|t| self.rules.iter().position(|r| r.pattern.covers_table(t)))
    }

    /// The first column rule, if any. For rows whose source the gateway cannot see in the
    /// statement that returns them (a cursor fetched, a statement prepared in SQL executed):
    /// their computed columns are masked whole with it.
    pub fn any_rule(&self) -> Option<usize> {
        (!self.rules.is_empty()).then_some(0)
    }

    /// The first column rule that may cover a table whose whole rows one of `statements`
    /// outputs through an expression (`to_jsonb(c)`, `c::text`, `row(c.*)`): such an output
    /// carries the covered column's values without naming it. Pass it to
    /// [`SessionMasks::columns`] as the mentioned rule.
    pub fn whole_row_rule(&self, statements: &[std::sync::Arc<SqlStatement>]) -> Option<usize> {
        if self.rules.is_empty() {
            return None;
        }
        let rows = statements
            .iter()
            .filter_map(|s| s.outputs.as_deref())
            .flatten()
            .filter_map(|o| match o {
                // A bare whole row keeps its type: a reader of structured values judges its
                // fields as their columns.
                Output::Expr {
                    rows, bare: false, ..
                } => Some(rows),
                _ => None,
            })
            .flatten();
        self.touched_rule(rows.map(String::as_str))
    }

    /// The first column rule a SQL statement mentions by name (identifier scan, quoted or not,
    /// case-insensitive; literals and comments skipped). Pass it to [`SessionMasks::columns`]
    /// so expression columns (`upper(ssn)`, `ssn || ''`) are masked whole.
    pub fn mentioned_rule(&self, sql: &str) -> Option<usize> {
        if self.rules.is_empty() {
            return None;
        }
        rules::mentioned(sql, |ident| {
            self.rules
                .iter()
                .position(|r| r.pattern.mention().matches(ident))
        })
    }

    /// Plan a result: per column, pass, scan or mask whole. A column matching a rule is masked
    /// whole; so is a column with no table origin when `mentioned` (from
    /// [`SessionMasks::mentioned_rule`]) says the statement names a covered column.
    pub fn columns<'a>(
        self: &Arc<Self>,
        cols: impl IntoIterator<Item = ColumnRef<'a>>,
        mentioned: Option<usize>,
    ) -> ResultMask {
        let plans: Vec<ColumnPlan> = cols.into_iter().map(|c| self.plan(c, mentioned)).collect();
        let noop = plans.iter().all(|p| *p == ColumnPlan::Pass);
        ResultMask {
            session: Arc::clone(self),
            plans,
            noop,
        }
    }

    fn plan(&self, c: ColumnRef<'_>, mentioned: Option<usize>) -> ColumnPlan {
        let rule = self
            .rules
            .iter()
            .position(|r| r.pattern.matches(c.table, c.name))
            .or(if c.table.is_none() { mentioned } else { None });
        if let Some(rule) = rule {
            return ColumnPlan::Whole { rule, hint: c.hint };
        }
        match c.hint {
            TypeHint::Text | TypeHint::Json
                if !self.scanner.is_empty() || self.has_field_rules() =>
            {
                ColumnPlan::Scan(c.hint)
            }
            TypeHint::Numeric if self.scanner.has(Detector::Card) => {
                ColumnPlan::Scan(TypeHint::Numeric)
            }
            _ => ColumnPlan::Pass,
        }
    }

    fn has_field_rules(&self) -> bool {
        self.rules.iter().any(|r| !r.pattern.column.is_any())
    }

    /// Whether a JSON key masks its field whole: a column rule's column pattern, or a secret.
    fn field_rule(&self, key: &[u8]) -> Option<Why> {
        if let Some(i) = self
            .rules
            .iter()
            .position(|r| !r.pattern.column.is_any() && r.pattern.column.matches(key))
        {
            return Some(Why::Column(i));
        }
        (self.scanner.has(Detector::Secret) && detectors::is_secret_key(key)).then_some(Why::Secret)
    }

    /// Mask one value under a plan. See [`ResultMask::mask`].
    pub fn mask_with(
        &self,
        plan: ColumnPlan,
        value: &[u8],
        out: &mut Vec<u8>,
        counts: &mut MaskCounts,
    ) -> Masked {
        match plan {
            ColumnPlan::Pass => Masked::Unchanged,
            ColumnPlan::Whole { rule, hint } => {
                if rule < self.rules.len() {
                    counts.add_column(rule);
                }
                counts.add_value();
                let quote = match hint {
                    TypeHint::Text => false,
                    TypeHint::Json => true,
                    TypeHint::Numeric | TypeHint::Other => return Masked::Null,
                };
                let strategy = self
                    .rules
                    .get(rule)
                    .map_or(MaskStrategy::Redact, |r| r.strategy);
                out.clear();
                render(Target::Column, strategy, value, &self.keyed, quote, out);
                Masked::Replaced
            }
            ColumnPlan::Scan(TypeHint::Numeric) => {
                if scan::numeric_card(value) {
                    counts.add_kind(Kind::Card);
                    counts.add_value();
                    Masked::Null
                } else {
                    Masked::Unchanged
                }
            }
            ColumnPlan::Scan(TypeHint::Other) => Masked::Unchanged,
            ColumnPlan::Scan(hint) => self.mask_value(value, hint, out, counts),
        }
    }

    /// Scan one value with the detectors (and JSON field rules) only, no column rule: for
    /// values with no result shape, such as COPY text fields or an HTTP body.
    pub fn mask_value(
        &self,
        value: &[u8],
        hint: TypeHint,
        out: &mut Vec<u8>,
        counts: &mut MaskCounts,
    ) -> Masked {
        let json = match hint {
            TypeHint::Json => true,
            TypeHint::Text => looks_like_json(value),
            TypeHint::Numeric => {
                let plan = ColumnPlan::Scan(TypeHint::Numeric);
                return self.mask_with(plan, value, out, counts);
            }
            TypeHint::Other => return Masked::Unchanged,
        };
        let mut w = Rewriter {
            v: value,
            out,
            pos: 0,
            started: false,
            quote: false,
            session: self,
            counts,
        };
        if json {
            json::walk(value, &mut w);
        } else {
            self.scanner.scan(value, 0, &mut w);
        }
        w.finish()
    }
}

/// A document starts with `{` or `[` after optional blanks.
fn looks_like_json(v: &[u8]) -> bool {
    v.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{' || b == b'[')
}

/// The plan for one result shape (e.g. a Postgres RowDescription).
#[derive(Debug, Clone)]
pub struct ResultMask {
    session: Arc<SessionMasks>,
    plans: Vec<ColumnPlan>,
    noop: bool,
}

impl ResultMask {
    /// True when every column passes: the caller can forward the result untouched.
    pub fn is_noop(&self) -> bool {
        self.noop
    }

    /// Number of planned columns.
    pub fn len(&self) -> usize {
        self.plans.len()
    }

    /// True when the result has no columns.
    pub fn is_empty(&self) -> bool {
        self.plans.is_empty()
    }

    /// The plan for column `col` (a column past the planned ones is masked to NULL).
    pub fn plan(&self, col: usize) -> ColumnPlan {
        self.plans.get(col).copied().unwrap_or(ColumnPlan::Whole {
            rule: usize::MAX,
            hint: TypeHint::Other,
        })
    }

    /// Mask every value of column `col` whole, as a column rule would (`rule` indexes
    /// [`SessionMasks::column_rule_names`], `None` when no single rule is the cause): for
    /// values the caller knows carry covered data under another shape, such as a whole-row
    /// value of a table with a covered column.
    pub fn mask_whole(&mut self, col: usize, rule: Option<usize>, hint: TypeHint) {
        if let Some(p) = self.plans.get_mut(col) {
            *p = ColumnPlan::Whole {
                rule: rule.unwrap_or(usize::MAX),
                hint,
            };
            self.noop = false;
        }
    }

    /// Mask the value of column `col`. `Unchanged` leaves `out` untouched and allocates
    /// nothing; `Replaced` means `out` holds the new bytes; `Null` means send SQL NULL.
    /// A column past the planned ones is sent as NULL (fail closed).
    #[inline]
    pub fn mask(
        &self,
        col: usize,
        value: &[u8],
        out: &mut Vec<u8>,
        counts: &mut MaskCounts,
    ) -> Masked {
        match self.plans.get(col) {
            Some(ColumnPlan::Pass) => Masked::Unchanged,
            Some(ColumnPlan::Scan(TypeHint::Text)) => {
                self.session.mask_value(value, TypeHint::Text, out, counts)
            }
            Some(&plan) => self.session.mask_with(plan, value, out, counts),
            None => {
                counts.add_value();
                Masked::Null
            }
        }
    }
}
