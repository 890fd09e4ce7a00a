//! Result masking for one Postgres session: plans from RowDescriptions (origins resolved
//! through the catalog side-connection, types mapped to hints), DataRows, COPY out data and
//! error/notice texts rewritten through the protocol-neutral engine, counts per statement.
//! Only sessions that some `[[masking]]` block applies to have one of these.

pub(crate) mod catalog;
pub(crate) mod copy;
mod covers;
mod deep;
mod errors;
mod views;

use std::sync::Arc;

use bytes::BytesMut;
use gateway_core::masking::{
    ColumnPlan, ColumnRef, Detector, MaskCounts, Masked, ResultMask, SessionMasks, TypeHint,
};

use crate::codec::{self, CodecError};
use catalog::Catalog;
use copy::{CopyFormat, CopyScratch};
use covers::{COVERS_KEY, Covers};
use deep::shape::{self, oid};
use deep::{Pool, Shape, Shaper, Walker};
use errors::{detail_values, quoted_masked};
use views::Judged;

/// How one column's values are handled.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// The engine's plan for the column, on the value as is.
    Engine,
    /// Nothing can change (a container of scalars, with no rule on it).
    Pass,
    /// Walked by type (arrays, composites, records, enums, binary numbers and jsonb), under
    /// `whole` when a rule covers the column.
    Deep {
        shape: Arc<Shape>,
        binary: bool,
        whole: Option<usize>,
    },
}

/// The plan for one result shape.
pub(crate) struct RowPlan {
    mask: ResultMask,
    modes: Box<[Mode]>,
    noop: bool,
    /// The card detector is on (integers in binary are checked).
    card: bool,
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
        self.noop
    }

    /// A column whose binary values this proxy can't read (they would be sent as NULL).
    pub fn unreadable_binary(&self) -> Option<usize> {
        self.modes.iter().position(
            |m| matches!(m, Mode::Deep { shape, binary: true, .. } if contains_opaque(shape)),
        )
    }
}

/// Whether a shape has a part whose binary form can't be read.
fn contains_opaque(s: &Shape) -> bool {
    match s {
        Shape::Opaque => true,
        Shape::Array { elem, .. } => contains_opaque(elem),
        Shape::Row(fields) => fields.iter().any(|f| contains_opaque(&f.shape)),
        _ => false,
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

/// The engine's hint for a column of `shape`, and whether it is walked by type.
fn hint(shape: &Shape, binary: bool) -> (TypeHint, bool) {
    match shape {
        Shape::Text => (TypeHint::Text, false),
        Shape::Json => (TypeHint::Json, false),
        Shape::Jsonb => (TypeHint::Json, binary),
        Shape::Int(_) | Shape::Numeric => (TypeHint::Numeric, binary),
        Shape::Scalar => (TypeHint::Other, false),
        // Text form of a type this proxy can't read is scanned as text.
        Shape::Opaque => (
            if binary {
                TypeHint::Other
            } else {
                TypeHint::Text
            },
            binary,
        ),
        Shape::Enum => (TypeHint::Other, true),
        Shape::Array { .. } | Shape::Row(_) | Shape::Record => (TypeHint::Text, true),
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
    pool: Pool,
    /// Columns whose values carry a covered composite field, once looked up, and when.
    covers: Option<(Covers, std::time::Instant)>,
}

impl Masking {
    pub fn new(masks: Arc<SessionMasks>) -> Masking {
        Masking {
            masks,
            catalog: Catalog::default(),
            counts: MaskCounts::new(),
            scratch: Vec::new(),
            copy_scratch: CopyScratch::default(),
            pool: Pool::default(),
            covers: None,
        }
    }

    /// Column origins, and types the built-in table does not know (keyed
    /// `(type, TYPE_KEY)`), the catalog has not answered for yet.
    pub fn unresolved<'a>(&self, cols: impl IntoIterator<Item = Column<'a>>) -> Vec<(u32, i16)> {
        let mut keys = Vec::new();
        let mut computed = false;
        for c in cols {
            computed |= c.table_oid == 0;
            let k = (c.table_oid, c.column_id);
            if k.0 != 0 && k.1 > 0 && self.catalog.origin(k).is_none() {
                keys.push(k);
            }
            if shape::needs_lookup(c.type_oid) && self.catalog.type_info(c.type_oid).is_none() {
                keys.push((c.type_oid, catalog::TYPE_KEY));
            }
        }
        // A computed column may read a covered composite column through an expression.
        if computed && !self.covers_current() && !self.masks.column_rule_names().is_empty() {
            keys.push((0, COVERS_KEY));
        }
        keys
    }

    /// Whether a column with no origin is masked whole for what it may carry: an anonymous
    /// record (can't tell what is in it) of a statement that reads data a rule may cover
    /// (`touched`), or a value of a type the catalog could not describe. The rule to
    /// credit, if one is known.
    fn whole_row(&self, c: &Column<'_>, touched: Option<usize>) -> Option<Option<usize>> {
        if self.masks.column_rule_names().is_empty() || (c.table_oid != 0 && c.column_id > 0) {
            return None;
        }
        if matches!(c.type_oid, oid::RECORD | oid::RECORD_ARRAY) {
            return touched.map(Some);
        }
        if !shape::needs_lookup(c.type_oid) {
            return None;
        }
        match self.catalog.type_info(c.type_oid) {
            // Never looked up, or the lookup failed: fail closed.
            None | Some(None) => Some(None),
            Some(Some(_)) => None,
        }
    }

    /// Plan a result. Columns with a table origin are judged by it (as resolved through the
    /// catalog); an origin the catalog could not resolve counts as no origin, so the
    /// column's name and the statement-mention rule decide (fail closed).
    ///
    /// `rows` (from [`SessionMasks::whole_row_rule`]) masks whole every column with no origin
    /// that is not JSON: the statement outputs whole rows of a covered table through an
    /// expression. JSON outputs keep their structure; their fields are masked by name.
    /// `touched`: the rule that may cover data the statement reads (anonymous records are
    /// then masked whole). Arrays, composites and records masked whole keep their structure:
    /// text inside becomes the rule's text, other values NULL.
    pub fn plan<'a>(
        &self,
        cols: impl IntoIterator<Item = Column<'a>>,
        mentioned: Option<usize>,
        rows: Option<usize>,
        touched: Option<usize>,
    ) -> Arc<RowPlan> {
        let cols: Vec<Column<'a>> = cols.into_iter().collect();
        let shaper = Shaper {
            types: self.catalog.types(),
            masks: &self.masks,
        };
        let shapes: Vec<(Arc<Shape>, TypeHint, bool)> = cols
            .iter()
            .map(|c| {
                let s = shaper.shape(c.type_oid);
                let (h, deep) = hint(&s, c.format == 1);
                (s, h, deep)
            })
            .collect();
        // Columns of views a rule covers through the view's definition.
        let mut through_views = Vec::new();
        let refs: Vec<ColumnRef<'_>> = cols
            .iter()
            .zip(&shapes)
            .enumerate()
            .map(|(i, (c, (_, h, _)))| {
                let h = *h;
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
                        None | Some(Judged::Own) => ColumnRef {
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
                    },
                    None => own,
                }
            })
            .collect();
        let no_origin: Vec<bool> = refs.iter().map(|r| r.table.is_none()).collect();
        let mut mask = self.masks.columns(refs, mentioned);
        for (i, rule) in through_views {
            let h = shapes.get(i).map_or(TypeHint::Other, |s| s.1);
            mask.mask_whole(i, Some(rule), h);
        }
        for (i, c) in cols.iter().enumerate() {
            let h = shapes.get(i).map_or(TypeHint::Other, |s| s.1);
            if let Some(rule) = self.whole_row(c, touched) {
                mask.mask_whole(i, rule, h);
            } else if let Some(rule) = rows
                && no_origin.get(i) == Some(&true)
                && h != TypeHint::Json
            {
                mask.mask_whole(i, Some(rule), h);
            }
        }
        let scan =
            self.masks.detectors().next().is_some() || !self.masks.column_rule_names().is_empty();
        let card = self.masks.detectors().any(|d| d == Detector::Card);
        let modes: Box<[Mode]> = shapes
            .into_iter()
            .zip(&cols)
            .enumerate()
            .map(|(i, ((shape, _, deep), c))| {
                if !deep {
                    return Mode::Engine;
                }
                let whole = match mask.plan(i) {
                    ColumnPlan::Whole { rule, .. } => Some(rule),
                    _ => None,
                };
                if whole.is_none() && !shape.active(scan, card) {
                    return Mode::Pass;
                }
                Mode::Deep {
                    shape,
                    binary: c.format == 1,
                    whole,
                }
            })
            .collect();
        let noop = modes.iter().enumerate().all(|(i, m)| match m {
            Mode::Engine => mask.plan(i) == ColumnPlan::Pass,
            Mode::Pass => true,
            Mode::Deep { .. } => false,
        });
        Arc::new(RowPlan {
            mask,
            modes,
            noop,
            card,
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
        let mask = self.masks.columns(refs, mentioned);
        Arc::new(RowPlan {
            noop: mask.is_noop(),
            mask,
            modes: vec![Mode::Engine; columns].into(),
            card: false,
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
            pool,
            ..
        } = self;
        codec::rewrite_data_row(raw, scratch, out, |col, v, s| {
            mask_field(plan, masks, counts, pool, col, v, s)
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
            pool,
            ..
        } = self;
        copy::rewrite_copy_data(data, format, copy_scratch, out, |col, v, s| match plan {
            Some(p) if matches!(p.modes.get(col), Some(Mode::Pass | Mode::Deep { .. })) => {
                mask_field(p, masks, counts, pool, col, v, s)
            }
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

impl Masking {
    /// Mask one CopyData payload of a binary COPY (`plan` made for binary columns) into
    /// `out` (a whole CopyData message) if anything changed. `started`: the file header
    /// was seen (it comes in front of the first row).
    pub fn mask_copy_binary(
        &mut self,
        data: &[u8],
        plan: &RowPlan,
        started: &mut bool,
        out: &mut BytesMut,
    ) -> Result<bool, CodecError> {
        let Masking {
            masks,
            counts,
            copy_scratch,
            pool,
            ..
        } = self;
        copy::binary::rewrite(data, started, &mut copy_scratch.masked, out, |col, v, s| {
            mask_field(plan, masks, counts, pool, col, v, s)
        })
    }
}

/// Mask the value of column `col` under `plan`.
fn mask_field(
    plan: &RowPlan,
    masks: &SessionMasks,
    counts: &mut MaskCounts,
    pool: &mut Pool,
    col: usize,
    v: &[u8],
    s: &mut Vec<u8>,
) -> Masked {
    match plan.modes.get(col) {
        Some(Mode::Pass) => Masked::Unchanged,
        Some(Mode::Deep {
            shape,
            binary,
            whole,
        }) => {
            let mut w = Walker {
                card: plan.card,
                masks,
                counts,
                pool,
            };
            w.value(shape, *binary, *whole, v, s)
        }
        _ => plan.mask.mask(col, v, s, counts),
    }
}
