//! How one result set is masked: which columns a rule covers (by the name each has in its
//! table, through aliases), which are computed from a protected column, which cannot be masked;
//! and the text of errors quoting a protected value.

use std::sync::Arc;

use gateway_core::action::Output;
use gateway_core::masking::{
    ColumnPlan, ColumnRef, MaskCounts, Masked, ResultMask, SessionMasks, TypeHint,
};

use crate::codec::metadata::ColMetadata;
use crate::codec::types::{DataType, TypeInfo};
use crate::results::Lineage;

/// The replacement text for a value, from what the masking engine did.
pub(crate) fn replacement(m: Masked, scratch: &[u8]) -> Option<String> {
    match m {
        Masked::Unchanged => None,
        Masked::Replaced => Some(String::from_utf8_lossy(scratch).into_owned()),
        // Character columns are never planned to NULL; a column past the plan is emptied.
        Masked::Null => Some(String::new()),
    }
}

/// What a column's values are, for the masking engine.
pub(crate) fn hint_of(ty: &TypeInfo) -> TypeHint {
    use DataType::*;
    if ty.may_hold_text() {
        return TypeHint::Text;
    }
    match ty.data_type {
        Int1 | Int2 | Int4 | Int8 | IntN | Decimal | Numeric | DecimalN | NumericN | Money
        | Money4 | MoneyN => TypeHint::Numeric,
        _ => TypeHint::Other,
    }
}

/// The plan for one result set: each column by the name it has in its table; a computed
/// column masked whole when what it reads includes a protected column.
pub(crate) fn plan(
    masks: &Arc<SessionMasks>,
    meta: &ColMetadata,
    lineage: Option<&Lineage>,
) -> ResultMask {
    let mentioned = lineage.and_then(|l| l.mentioned);
    let outputs = lineage.and_then(|l| l.outputs.as_deref());
    let sources: Vec<Source<'_>> = meta
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| source(outputs, meta.len(), i, &c.name))
        .collect();
    let cols = meta.columns.iter().zip(&sources).map(|(c, s)| ColumnRef {
        // The wire does not say which table a column is from: rules match by name alone.
        table: None,
        name: match s {
            Source::Column(base) => base,
            Source::Computed(_) => &c.name,
        },
        hint: hint_of(&c.type_info),
    });
    let mut plan = masks.columns(cols, None);
    if mentioned.is_none() {
        return plan;
    }
    for (i, (c, s)) in meta.columns.iter().zip(&sources).enumerate() {
        let rule = match s {
            Source::Column(_) => None,
            Source::Computed(None) => mentioned,
            Source::Computed(Some(reads)) => reads.iter().find_map(|r| masks.mentioned_rule(r)),
        };
        if rule.is_some() {
            plan.mask_whole(i, rule, hint_of(&c.type_info));
        }
    }
    plan
}

/// Where a result column comes from, as far as the statement tells.
enum Source<'a> {
    /// A table's column of this name.
    Column(&'a str),
    /// Computed from the columns named (`None`: from what the gateway cannot tell).
    Computed(Option<Vec<&'a str>>),
}

fn source<'a>(outputs: Option<&'a [Output]>, n: usize, i: usize, name: &'a str) -> Source<'a> {
    let Some(outputs) = outputs else {
        return Source::Computed(None);
    };
    let of_expr = |reads: &'a [String], opaque: bool| {
        Source::Computed((!opaque).then(|| reads.iter().map(String::as_str).collect()))
    };
    let wildcard = outputs.iter().any(|o| matches!(o, Output::Wildcard));
    if !wildcard {
        // One output per column, in order.
        if outputs.len() != n {
            return Source::Computed(None);
        }
        return match outputs.get(i) {
            Some(Output::Column { name, .. }) => Source::Column(name),
            Some(Output::Expr { reads, opaque, .. }) => of_expr(reads, *opaque),
            _ => Source::Computed(None),
        };
    }
    // With `*` the columns can't be counted off: a name an expression gives (an unnamed one
    // has none) is computed from what all such expressions read, an alias of a column is that
    // column, any other name is a table's own column.
    let mut base = name;
    let mut computed = false;
    let mut reads: Vec<&str> = Vec::new();
    for o in outputs {
        match o {
            Output::Expr {
                alias,
                reads: r,
                opaque,
                ..
            } if alias
                .as_deref()
                .unwrap_or_default()
                .eq_ignore_ascii_case(name) =>
            {
                if *opaque {
                    return Source::Computed(None);
                }
                reads.extend(r.iter().map(String::as_str));
                computed = true;
            }
            Output::Column {
                name: column,
                alias: Some(a),
            } if a.eq_ignore_ascii_case(name) => base = column,
            _ => {}
        }
    }
    if computed {
        Source::Computed(Some(reads))
    } else {
        Source::Column(base)
    }
}

/// Why a result set cannot be masked: a column rule covers a column whose values are not
/// character data (the gateway rewrites only those).
pub(crate) fn unmaskable(plan: &ResultMask, meta: &ColMetadata) -> Option<String> {
    meta.columns.iter().enumerate().find_map(|(i, c)| {
        let ColumnPlan::Whole { .. } = plan.plan(i) else {
            return None;
        };
        (!c.type_info.may_hold_text()).then(|| {
            format!(
                "portcullis: column {:?} is covered by a masking rule and its type ({:?}) is not character data, which this gateway masks; the result is withheld (cast it to a character type to read it masked)",
                c.name, c.type_info.data_type
            )
        })
    })
}

/// `text` with the inside of every `'…'` masked whole under `rule`; `None` when it quotes
/// nothing.
pub(crate) fn quoted_masked(
    masks: &SessionMasks,
    rule: usize,
    text: &str,
    counts: &mut MaskCounts,
) -> Option<String> {
    let mut out = String::with_capacity(text.len() + 16);
    let mut tmp = Vec::new();
    let mut rest = text;
    let mut any = false;
    while let Some(open) = rest.find('\'') {
        let Some(len) = rest[open + 1..].find('\'') else {
            break;
        };
        let inner = &rest[open + 1..open + 1 + len];
        out.push_str(&rest[..=open]);
        let whole = ColumnPlan::Whole {
            rule,
            hint: TypeHint::Text,
        };
        match masks.mask_with(whole, inner.as_bytes(), &mut tmp, counts) {
            Masked::Replaced => out.push_str(&String::from_utf8_lossy(&tmp)),
            _ => out.push_str("[masked]"),
        }
        out.push('\'');
        rest = &rest[open + 1 + len + 1..];
        any = true;
    }
    if !any {
        return None;
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::{Source, source};
    use gateway_core::action::Output;

    fn col(name: &str, alias: Option<&str>) -> Output {
        Output::Column {
            name: name.into(),
            alias: alias.map(Into::into),
        }
    }

    fn expr(alias: Option<&str>, reads: &[&str], opaque: bool) -> Output {
        Output::Expr {
            alias: alias.map(Into::into),
            reads: reads.iter().map(|r| r.to_string()).collect(),
            opaque,
            rows: Vec::new(),
            bare: false,
        }
    }

    fn show(s: Source<'_>) -> String {
        match s {
            Source::Column(c) => format!("column {c}"),
            Source::Computed(None) => "computed ?".into(),
            Source::Computed(Some(r)) => format!("computed {}", r.join(",")),
        }
    }

    #[test]
    fn columns_are_matched_in_order_or_by_name_around_a_wildcard() {
        let outs = [col("card", Some("x")), expr(None, &["name"], false)];
        assert_eq!(show(source(Some(&outs), 2, 0, "x")), "column card");
        assert_eq!(show(source(Some(&outs), 2, 1, "")), "computed name");
        // Counts that do not line up tell nothing.
        assert_eq!(show(source(Some(&outs), 3, 0, "x")), "computed ?");
        assert_eq!(show(source(None, 1, 0, "id")), "computed ?");

        let outs = [
            Output::Wildcard,
            col("card", Some("x")),
            expr(Some("c"), &["card"], false),
            expr(None, &["ssn"], false),
            expr(Some("q"), &[], true),
        ];
        assert_eq!(show(source(Some(&outs), 9, 0, "id")), "column id");
        assert_eq!(show(source(Some(&outs), 9, 1, "X")), "column card");
        assert_eq!(show(source(Some(&outs), 9, 2, "c")), "computed card");
        assert_eq!(show(source(Some(&outs), 9, 3, "")), "computed ssn");
        assert_eq!(show(source(Some(&outs), 9, 4, "q")), "computed ?");
    }
}
