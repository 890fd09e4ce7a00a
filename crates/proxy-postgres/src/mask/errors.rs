//! Errors and notices that echo values: the quoted parts of a message and the values of a
//! `Key (…)=(…)` or `Failing row contains (…)` detail, masked whole.

use gateway_core::masking::{ColumnPlan, MaskCounts, Masked, SessionMasks, TypeHint};

/// `text` with the inside of every `"…"` masked whole under `rule`; `None` when it quotes
/// nothing.
pub(super) fn quoted_masked(
    masks: &SessionMasks,
    rule: usize,
    text: &[u8],
    counts: &mut MaskCounts,
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() + 16);
    let mut tmp = Vec::new();
    let mut at = 0;
    let mut any = false;
    while let Some(open) = memchr::memchr(b'"', &text[at..]).map(|p| at + p) {
        let Some(close) = memchr::memchr(b'"', &text[open + 1..]).map(|p| open + 1 + p) else {
            break;
        };
        out.extend_from_slice(&text[at..=open]);
        let whole = ColumnPlan::Whole {
            rule,
            hint: TypeHint::Text,
        };
        match masks.mask_with(whole, &text[open + 1..close], &mut tmp, counts) {
            Masked::Replaced => out.extend_from_slice(&tmp),
            _ => out.extend_from_slice(b"[masked]"),
        }
        out.push(b'"');
        at = close + 1;
        any = true;
    }
    if !any {
        return None;
    }
    out.extend_from_slice(&text[at..]);
    Some(out)
}

/// Details that echo a row's values: `Key (email, ssn)=(…) already exists.` and
/// `Failing row contains (…).`. Values of covered columns are replaced whole.
pub(super) fn detail_values(
    masks: &SessionMasks,
    text: &[u8],
    s: &mut Vec<u8>,
    counts: &mut MaskCounts,
) -> Option<Masked> {
    let t = std::str::from_utf8(text).ok()?;
    let (cols, values_at) = if let Some(rest) = t.strip_prefix("Key (") {
        let close = rest.find(")=(")?;
        (Some(&rest[..close]), 5 + close + 3)
    } else if let Some(rest) = t.strip_prefix("Failing row contains (") {
        let _ = rest;
        (None, "Failing row contains (".len())
    } else {
        return None;
    };
    let rule = match cols {
        Some(c) => masks.mentioned_rule(c)?,
        None if !masks.column_rule_names().is_empty() => 0,
        None => return None,
    };
    let end = t.rfind(')').filter(|e| *e >= values_at)?;
    let whole = ColumnPlan::Whole {
        rule,
        hint: TypeHint::Text,
    };
    let mut tmp = Vec::new();
    masks.mask_with(whole, &text[values_at..end], &mut tmp, counts);
    s.clear();
    s.extend_from_slice(&text[..values_at]);
    s.extend_from_slice(&tmp);
    s.extend_from_slice(&text[end..]);
    Some(Masked::Replaced)
}
