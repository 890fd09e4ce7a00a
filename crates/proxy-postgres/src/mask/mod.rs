//! Result masking for one Postgres session: plans from RowDescriptions (origins resolved
//! through the catalog side-connection, types mapped to hints), DataRows, COPY out data and
//! error/notice texts rewritten through the protocol-neutral engine, counts per statement.
//! Only sessions that some `[[masking]]` block applies to have one of these.

pub(crate) mod catalog;
pub(crate) mod copy;
mod views;

use std::sync::Arc;

use bytes::BytesMut;
use gateway_core::masking::{
    ColumnPlan, ColumnRef, MaskCounts, Masked, ResultMask, SessionMasks, TypeHint,
};

use crate::codec::{self, CodecError};
use catalog::Catalog;
use copy::{CopyFormat, CopyScratch};
use views::Judged;

/// How one column's values are handled beyond the engine's plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The engine's plan for the column, on the value as is.
    Engine,
    /// Binary jsonb: a version byte (1), then JSON text.
    JsonbBinary,
    /// A binary format this proxy can't look inside (arrays of text, records, types of
    /// extensions): sent as NULL, so nothing passes unseen.
    Opaque,
}

/// The plan for one result shape.
pub(crate) struct RowPlan {
    mask: ResultMask,
    modes: Box<[Mode]>,
}

impl RowPlan {
    /// The rule of the first column a column rule covers.
    fn first_rule(&self) -> Option<usize> {
        (0..self.mask.len()).find_map(|c| match self.mask.plan(c) {
            ColumnPlan::Whole { rule, .. } => Some(rule),
            _ => None,
        })
    }

    /// True when every value passes untouched.
    pub fn is_noop(&self) -> bool {
        self.mask.is_noop() && self.modes.iter().all(|m| *m != Mode::Opaque)
    }
}

/// A result column as the relay sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Column<'a> {
    pub name: &'a str,
    pub table_oid: u32,
    pub column_id: i16,
    pub type_oid: u32,
    /// 0 text, 1 binary.
    pub format: i16,
}

mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const XML: u32 = 142;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const UNKNOWN: u32 = 705;
    pub const MONEY: u32 = 790;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const TIMETZ: u32 = 1266;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
    /// An anonymous row (`SELECT t FROM (SELECT …) t`, `ROW(…)`) and arrays of them.
    pub const RECORD: u32 = 2249;
    pub const RECORD_ARRAY: u32 = 2287;
    /// Types created in a database (tables' row types, domains, enums, extensions) start here.
    pub const FIRST_USER: u32 = 16384;
    /// Arrays of the scalar non-text types above (bool, int2/4/8, float4/8, numeric, date,
    /// timestamp(tz), uuid, oid).
    pub const SCALAR_ARRAYS: &[u32] = &[
        1000, 1005, 1007, 1016, 1021, 1022, 1231, 1182, 1115, 1185, 2951, 1028,
    ];
}

/// Scalar types whose values can't hold text: never scanned (a column rule makes them NULL).
fn is_scalar(t: u32) -> bool {
    use oid::*;
    matches!(
        t,
        BOOL | BYTEA
            | OID
            | FLOAT4
            | FLOAT8
            | MONEY
            | DATE
            | TIME
            | TIMESTAMP
            | TIMESTAMPTZ
            | INTERVAL
            | TIMETZ
            | UUID
            | 869
            | 650
            | 829
            | 774
            | 1560
            | 1562
            | 28
            | 3220
    ) || oid::SCALAR_ARRAYS.contains(&t)
}

/// The hint and handling for a column of type `t` in format `format`.
fn hint(t: u32, format: i16) -> (TypeHint, Mode) {
    use oid::*;
    let text_like = matches!(t, TEXT | VARCHAR | BPCHAR | NAME | XML | UNKNOWN | CHAR);
    match (format, t) {
        (_, JSON) => (TypeHint::Json, Mode::Engine),
        (0, JSONB) => (TypeHint::Json, Mode::Engine),
        (_, JSONB) => (TypeHint::Json, Mode::JsonbBinary),
        (_, INT2 | INT4 | INT8 | NUMERIC) if format == 0 => (TypeHint::Numeric, Mode::Engine),
        (_, t) if is_scalar(t) || matches!(t, INT2 | INT4 | INT8 | NUMERIC) => {
            (TypeHint::Other, Mode::Engine)
        }
        // Text form of anything else (text-like types, arrays, records, domains, types of
        // extensions such as citext) is scanned as text.
        (0, _) => (TypeHint::Text, Mode::Engine),
        (_, _) if text_like => (TypeHint::Text, Mode::Engine),
        _ => (TypeHint::Other, Mode::Opaque),
    }
}

/// What the session's masking needs between messages.
pub(crate) struct Masking {
    pub masks: Arc<SessionMasks>,
    pub catalog: Catalog,
    /// What fired since the last command completed.
    pub counts: MaskCounts,
    scratch: Vec<u8>,
    copy_scratch: CopyScratch,
}

impl Masking {
    pub fn new(masks: Arc<SessionMasks>) -> Masking {
        Masking {
            masks,
            catalog: Catalog::default(),
            counts: MaskCounts::new(),
            scratch: Vec::new(),
            copy_scratch: CopyScratch::default(),
        }
    }

    /// Column origins (and user-defined types of columns with no origin, keyed
    /// `(type, TYPE_KEY)`) the catalog has not answered for yet.
    pub fn unresolved<'a>(&self, cols: impl IntoIterator<Item = Column<'a>>) -> Vec<(u32, i16)> {
        let rules = !self.masks.column_rule_names().is_empty();
        cols.into_iter()
            .filter_map(|c| {
                let k = (c.table_oid, c.column_id);
                if k.0 != 0 && k.1 > 0 {
                    return self.catalog.origin(k).is_none().then_some(k);
                }
                (rules
                    && c.type_oid >= oid::FIRST_USER
                    && self.catalog.rowtype(c.type_oid).is_none())
                .then_some((c.type_oid, catalog::TYPE_KEY))
            })
            .collect()
    }

    /// Whether a column with no origin carries whole rows with covered columns: an anonymous
    /// record (can't tell what is in it), or a table's row type (or an array of one) where
    /// one of the table's columns is covered. The rule to credit, if one is known.
    fn whole_row(&self, c: &Column<'_>) -> Option<Option<usize>> {
        if self.masks.column_rule_names().is_empty() || (c.table_oid != 0 && c.column_id > 0) {
            return None;
        }
        if matches!(c.type_oid, oid::RECORD | oid::RECORD_ARRAY) {
            return Some(None);
        }
        if c.type_oid < oid::FIRST_USER {
            return None;
        }
        match self.catalog.rowtype(c.type_oid) {
            // Never looked up (no side connection asked): fail closed.
            None => Some(None),
            Some(None) => None,
            Some(Some(cols)) if cols.is_empty() => Some(None),
            Some(Some(cols)) => cols
                .iter()
                .find_map(|o| self.masks.rule_for(&o.table, &o.column))
                .map(Some),
        }
    }

    /// Plan a result. Columns with a table origin are judged by it (as resolved through the
    /// catalog); an origin the catalog could not resolve counts as no origin, so the
    /// column's name and the statement-mention rule decide (fail closed).
    ///
    /// `rows` (from [`SessionMasks::whole_row_rule`]) masks whole every column with no origin
    /// that is not JSON: the statement outputs whole rows of a covered table through an
    /// expression. JSON outputs keep their structure; their fields are masked by name.
    pub fn plan<'a>(
        &self,
        cols: impl IntoIterator<Item = Column<'a>>,
        mentioned: Option<usize>,
        rows: Option<usize>,
    ) -> Arc<RowPlan> {
        let cols: Vec<Column<'a>> = cols.into_iter().collect();
        let mut modes = Vec::with_capacity(cols.len());
        // Columns of views a rule covers through the view's definition.
        let mut through_views = Vec::new();
        let refs: Vec<ColumnRef<'_>> = cols
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (h, mode) = hint(c.type_oid, c.format);
                modes.push(mode);
                let origin = (c.table_oid != 0)
                    .then(|| self.catalog.origin((c.table_oid, c.column_id)))
                    .flatten()
                    .and_then(|o| o.as_ref());
                let own = ColumnRef {
                    table: None,
                    name: c.name,
                    hint: h,
                };
                match origin {
                    Some(o) => match o.view.as_deref().map(|v| v.judge(&self.masks)) {
                        None => ColumnRef {
                            table: Some(&o.table),
                            name: &o.column,
                            hint: h,
                        },
                        Some(Judged::Column { table, name }) => ColumnRef {
                            table,
                            name,
                            hint: h,
                        },
                        Some(Judged::Whole(rule)) => {
                            through_views.push((i, rule));
                            own
                        }
                        Some(Judged::Own) => ColumnRef {
                            table: Some(&o.table),
                            name: &o.column,
                            hint: h,
                        },
                    },
                    None => own,
                }
            })
            .collect();
        let no_origin: Vec<bool> = refs.iter().map(|r| r.table.is_none()).collect();
        let mut mask = self.masks.columns(refs, mentioned);
        for (i, rule) in through_views {
            let h = cols
                .get(i)
                .map_or(TypeHint::Other, |c| hint(c.type_oid, c.format).0);
            mask.mask_whole(i, Some(rule), h);
        }
        for (i, c) in cols.iter().enumerate() {
            let h = hint(c.type_oid, c.format).0;
            if let Some(rule) = self.whole_row(c) {
                mask.mask_whole(i, rule, h);
            } else if let Some(rule) = rows
                && no_origin.get(i) == Some(&true)
                && h != TypeHint::Json
            {
                mask.mask_whole(i, Some(rule), h);
            }
        }
        Arc::new(RowPlan {
            mask,
            modes: modes.into(),
        })
    }

    /// The plan for rows whose description is unknown: every value scanned as text, and
    /// masked whole if the statement mentions a covered column.
    pub fn blind_plan(&self, columns: usize, mentioned: Option<usize>) -> Arc<RowPlan> {
        let refs = (0..columns).map(|_| ColumnRef {
            table: None,
            name: "?column?",
            hint: TypeHint::Text,
        });
        Arc::new(RowPlan {
            mask: self.masks.columns(refs, mentioned),
            modes: vec![Mode::Engine; columns].into(),
        })
    }

    /// Mask one DataRow (`raw` whole) into `out`; see [`codec::rewrite_data_row`].
    pub fn mask_row(
        &mut self,
        plan: &RowPlan,
        raw: &[u8],
        out: &mut BytesMut,
    ) -> Result<bool, CodecError> {
        let Masking {
            masks,
            counts,
            scratch,
            ..
        } = self;
        codec::rewrite_data_row(raw, scratch, out, |col, v, s| {
            match plan.modes.get(col).copied().unwrap_or(Mode::Engine) {
                Mode::Engine => plan.mask.mask(col, v, s, counts),
                Mode::JsonbBinary => match v.split_first() {
                    Some((1, json)) => {
                        let m = plan.mask.mask(col, json, s, counts);
                        if m == Masked::Replaced {
                            s.insert(0, 1);
                        }
                        m
                    }
                    _ => opaque(masks, v, s, counts),
                },
                Mode::Opaque => opaque(masks, v, s, counts),
            }
        })
    }

    /// Mask the payload of a NotificationResponse (`raw` whole) into `out`: scanned by the
    /// detectors, and masked whole under `rule` once the session has read covered data (a
    /// `pg_notify` can carry any value out of a statement). False when nothing changed.
    pub fn mask_notification(
        &mut self,
        raw: &[u8],
        rule: Option<usize>,
        out: &mut BytesMut,
    ) -> Result<bool, CodecError> {
        let body = raw.get(5..).unwrap_or_default();
        let bad = || CodecError::Malformed("NotificationResponse");
        let pid = body.get(..4).ok_or_else(bad)?;
        let rest = &body[4..];
        let channel_end = memchr::memchr(0, rest).ok_or_else(bad)?;
        let payload = &rest[channel_end + 1..];
        let payload = payload.strip_suffix(&[0]).ok_or_else(bad)?;
        let Masking {
            masks,
            counts,
            scratch,
            ..
        } = self;
        let m = match rule {
            Some(rule) => {
                let whole = ColumnPlan::Whole {
                    rule,
                    hint: TypeHint::Text,
                };
                masks.mask_with(whole, payload, scratch, counts)
            }
            None => masks.mask_value(payload, TypeHint::Text, scratch, counts),
        };
        if m != Masked::Replaced || scratch.contains(&0) {
            return Ok(false);
        }
        let len = 4 + 4 + channel_end + 1 + scratch.len() + 1;
        let len = i32::try_from(len).map_err(|_| bad())?;
        out.extend_from_slice(&[raw[0]]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(pid);
        out.extend_from_slice(&rest[..=channel_end]);
        out.extend_from_slice(scratch);
        out.extend_from_slice(&[0]);
        Ok(true)
    }

    /// Mask the message, detail, hint and context of an ErrorResponse / NoticeResponse.
    /// A unique-violation detail (`Key (col)=(value)`) naming a covered column has its value
    /// replaced whole; so has a `Failing row contains (…)` detail when column rules exist.
    /// `touched`: the rule covering data the statement read, if any; then every quoted
    /// part of the message, detail, hint and context (where PostgreSQL quotes the value it
    /// failed on: `invalid input syntax for type integer: "…"`) is masked whole with it.
    pub fn mask_error(
        &mut self,
        raw: &[u8],
        touched: Option<usize>,
        out: &mut BytesMut,
    ) -> Result<bool, CodecError> {
        let Masking {
            masks,
            counts,
            scratch,
            ..
        } = self;
        codec::rewrite_error_fields(raw, scratch, out, |kind, text, s| {
            if kind == b'D'
                && let Some(m) = detail_values(masks, text, s, counts)
            {
                return m;
            }
            if let Some(rule) = touched
                && matches!(kind, b'M' | b'D' | b'H' | b'W')
                && let Some(unquoted) = quoted_masked(masks, rule, text, counts)
            {
                return match masks.mask_value(&unquoted, TypeHint::Text, s, counts) {
                    Masked::Replaced => Masked::Replaced,
                    _ => {
                        s.clear();
                        s.extend_from_slice(&unquoted);
                        Masked::Replaced
                    }
                };
            }
            masks.mask_value(text, TypeHint::Text, s, counts)
        })
    }

    /// A text for the audit trail (an error message) with the detectors applied; counts
    /// are not affected.
    pub fn masked_text(&self, text: &str) -> String {
        let mut out = Vec::new();
        let mut scratch = MaskCounts::new();
        match self
            .masks
            .mask_value(text.as_bytes(), TypeHint::Text, &mut out, &mut scratch)
        {
            Masked::Replaced => String::from_utf8_lossy(&out).into_owned(),
            Masked::Unchanged | Masked::Null => text.to_string(),
        }
    }

    /// Mask one CopyData payload into `out` (a whole CopyData message) if anything changed.
    pub fn mask_copy(
        &mut self,
        data: &[u8],
        format: CopyFormat,
        plan: Option<&RowPlan>,
        mentioned: Option<usize>,
        out: &mut BytesMut,
    ) -> bool {
        let Masking {
            masks,
            counts,
            copy_scratch,
            ..
        } = self;
        copy::rewrite_copy_data(data, format, copy_scratch, out, |col, v, s| match plan {
            // COPY text is text whatever the column type; the plan's rules and hints apply.
            Some(p) if col < p.mask.len() => match p.mask.plan(col) {
                ColumnPlan::Pass => Masked::Unchanged,
                ColumnPlan::Whole { rule, .. } => {
                    let whole = ColumnPlan::Whole {
                        rule,
                        hint: TypeHint::Text,
                    };
                    masks.mask_with(whole, v, s, counts)
                }
                plan => masks.mask_with(plan, v, s, counts),
            },
            // A whole line (options this proxy does not split by) or a field past the plan:
            // masked whole if any copied column, or the statement, is covered by a rule.
            _ => match mentioned.or_else(|| plan.and_then(RowPlan::first_rule)) {
                Some(rule) => {
                    let whole = ColumnPlan::Whole {
                        rule,
                        hint: TypeHint::Text,
                    };
                    masks.mask_with(whole, v, s, counts)
                }
                None => masks.mask_value(v, TypeHint::Text, s, counts),
            },
        })
    }
}

/// `text` with the inside of every `"…"` masked whole under `rule`; `None` when it quotes
/// nothing.
fn quoted_masked(
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

/// A value sent as NULL because it can't be looked into.
fn opaque(masks: &SessionMasks, v: &[u8], s: &mut Vec<u8>, counts: &mut MaskCounts) -> Masked {
    let whole = ColumnPlan::Whole {
        rule: usize::MAX,
        hint: TypeHint::Other,
    };
    masks.mask_with(whole, v, s, counts)
}

/// Details that echo a row's values: `Key (email, ssn)=(…) already exists.` and
/// `Failing row contains (…).`. Values of covered columns are replaced whole.
fn detail_values(
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
