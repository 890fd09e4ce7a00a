//! Masking of what the target sends, message by message: which plan applies to each
//! DataRow (the last RowDescription of a simple query, or the description of an Execute's
//! statement with its Bind's formats), COPY out, and error/notice texts. Runs inside
//! downstream only when masking applies to the session.

use std::sync::Arc;

use bytes::BytesMut;
use gateway_core::Side;

use super::state::{ResultSource, Shared};
use crate::codec::{self, Frame, tags::backend as be};
use crate::ctx::SessionCtx;
use crate::error::{PgError, Result};
use crate::mask::catalog::Described;
use crate::mask::copy::{CopyFormat, parse_copy};
use crate::mask::{Column, Masking, RowPlan};

/// What downstream does with a frame after masking looked at it.
pub(super) enum Step {
    /// Forward the original bytes (and do the usual bookkeeping).
    Pass,
    /// Masking appended its replacement to the output (or dropped the frame).
    Written,
    /// The frame needs the catalog first: hold it, do this, then process it again.
    Wait(Wait),
}

/// Catalog work a frame waits for.
pub(super) enum Wait {
    Resolve(Vec<(u32, i16)>),
    DescribeCopy(String),
}

/// Completions keep their bookkeeping even when masking rewrote or dropped them.
pub(super) fn is_completion(tag: u8) -> bool {
    matches!(tag, be::ERROR | be::COMMAND_COMPLETE)
}

/// COPY out in progress.
enum CopyOut {
    Off,
    On {
        format: CopyFormat,
        plan: Option<Arc<RowPlan>>,
        mentioned: Option<usize>,
        /// The next CopyData is the CSV header line (column names, passed as is).
        header: bool,
    },
    /// Binary COPY out: fields masked by their columns' types.
    Binary {
        plan: Arc<RowPlan>,
        /// The file header was seen.
        started: bool,
    },
    /// Binary COPY under masking: the client got an error in its place; the data is dropped.
    Refused,
}

const BINARY_COPY_REFUSED: &str = "portcullis: this binary COPY is refused on this connection because its results are masked and its columns can't be read in binary; use text or CSV format";

/// Per-session masking state of the downstream half.
pub(super) struct Results {
    pub m: Masking,
    /// The plan the DataRows now arriving use.
    current: Option<Arc<RowPlan>>,
    copy: CopyOut,
    /// The side connection's description of the COPY being started (`Some(None)`: it could
    /// not describe it).
    copy_desc: Option<Option<Vec<Described>>>,
    /// The first rule covering data a statement of this session read: notifications are
    /// masked whole from then on.
    touched_any: Option<usize>,
}

fn target_codec(err: codec::CodecError) -> PgError {
    PgError::Codec {
        side: Side::Target,
        err,
    }
}

/// The format of result column `i` under a Bind's format codes.
fn format_of(formats: &[i16], i: usize) -> i16 {
    match formats {
        [] => 0,
        [one] => *one,
        many => many.get(i).copied().unwrap_or(0),
    }
}

impl Results {
    pub fn new(m: Masking) -> Results {
        Results {
            m,
            current: None,
            copy: CopyOut::Off,
            copy_desc: None,
            touched_any: None,
        }
    }

    /// Do the catalog work a held frame waits for.
    pub async fn run_wait(&mut self, ctx: &SessionCtx, w: Wait) {
        match w {
            Wait::Resolve(keys) => self.m.resolve(ctx, &keys).await,
            Wait::DescribeCopy(sql) => {
                let d = self.m.catalog.describe(ctx, &sql).await;
                if let Some(cols) = &d {
                    let keys = self.m.unresolved(cols.iter().map(|c| Column {
                        name: &c.name,
                        table_oid: c.table_oid,
                        column_id: c.column_id,
                        type_oid: c.type_oid,
                        format: 0,
                    }));
                    self.m.resolve(ctx, &keys).await;
                }
                self.copy_desc = Some(d);
            }
        }
    }

    /// ReadyForQuery: nothing of the batch carries over.
    pub fn batch_done(&mut self) {
        self.current = None;
        self.copy = CopyOut::Off;
        self.copy_desc = None;
    }

    /// At CommandComplete: the error to record if this was a refused binary COPY.
    pub fn take_refused_copy(&mut self) -> Option<String> {
        match std::mem::replace(&mut self.copy, CopyOut::Off) {
            CopyOut::Refused => Some(BINARY_COPY_REFUSED.into()),
            _ => None,
        }
    }

    pub fn frame(&mut self, sh: &mut Shared, frame: &Frame, out: &mut BytesMut) -> Result<Step> {
        let written = |changed: bool| if changed { Step::Written } else { Step::Pass };
        match frame.tag {
            be::DATA_ROW => {
                if self.current.is_none() {
                    // Rows with no description seen: the covered columns are still needed.
                    if let Some(key) =
                        source(sh).and_then(|s| self.m.covers_wanted_for(&s.statements))
                    {
                        return Ok(Step::Wait(Wait::Resolve(vec![key])));
                    }
                    self.current = Some(self.plan_for_rows(sh, frame));
                }
                let Results { m, current, .. } = self;
                let Some(plan) = current.as_deref() else {
                    return Ok(Step::Pass);
                };
                if plan.is_noop() {
                    return Ok(Step::Pass);
                }
                let changed = m.mask_row(plan, &frame.raw, out).map_err(target_codec)?;
                Ok(written(changed))
            }
            be::ROW_DESCRIPTION => {
                let fields = codec::parse_row_description(frame.body()).map_err(target_codec)?;
                let cols = fields.iter().map(|f| Column {
                    name: f.name,
                    table_oid: f.table_oid,
                    column_id: f.column_id,
                    type_oid: f.type_oid,
                    format: f.format,
                });
                let keys = self.m.unresolved(cols.clone());
                if !keys.is_empty() {
                    return Ok(Step::Wait(Wait::Resolve(keys)));
                }
                if sh.describes.front().is_some_and(|d| d.0 <= sh.batches_done) {
                    // The answer to a Describe: the statement's columns, for its Executes.
                    if let Some((_, p)) = sh.describes.pop_front() {
                        let d: Vec<Described> = fields
                            .iter()
                            .map(|f| Described {
                                name: f.name.to_string(),
                                table_oid: f.table_oid,
                                column_id: f.column_id,
                                type_oid: f.type_oid,
                            })
                            .collect();
                        *p.described.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::from(d));
                    }
                    self.current = None;
                } else {
                    let (mentioned, rows) = mentioned(sh);
                    let cover = self.cover(sh);
                    self.current =
                        Some(
                            self.m
                                .plan(cols, mentioned.or(cover), rows, touched(sh).or(cover)),
                        );
                }
                Ok(Step::Pass)
            }
            be::NO_DATA => {
                if sh.describes.front().is_some_and(|d| d.0 <= sh.batches_done)
                    && let Some((_, p)) = sh.describes.pop_front()
                {
                    *p.described.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(Arc::from(Vec::new()));
                }
                Ok(Step::Pass)
            }
            be::ERROR | be::NOTICE => {
                if frame.tag == be::ERROR {
                    self.current = None;
                    if matches!(self.copy, CopyOut::On { .. } | CopyOut::Binary { .. }) {
                        self.copy = CopyOut::Off;
                    }
                    // The gateway's own refusal substitutes are not the target's words.
                    if let Ok(f) = codec::parse_error_fields(frame.body())
                        && f.code == "42601"
                        && f.message.contains(sh.marker.as_str())
                    {
                        return Ok(Step::Pass);
                    }
                }
                if let Some(key) = source(sh).and_then(|s| self.m.covers_wanted_for(&s.statements))
                {
                    return Ok(Step::Wait(Wait::Resolve(vec![key])));
                }
                let touched = touched(sh).or_else(|| self.cover(sh));
                if self.touched_any.is_none() {
                    self.touched_any = touched;
                }
                let changed = self
                    .m
                    .mask_error(&frame.raw, touched, out)
                    .map_err(target_codec)?;
                Ok(written(changed))
            }
            be::COMMAND_COMPLETE => {
                self.current = None;
                if self.touched_any.is_none() {
                    self.touched_any = touched(sh).or_else(|| self.cover(sh));
                }
                if let Some(s) = source(sh) {
                    self.m.statements_done(&s.statements);
                }
                if matches!(self.copy, CopyOut::Refused) {
                    return Ok(Step::Written);
                }
                self.copy = CopyOut::Off;
                Ok(Step::Pass)
            }
            be::NOTIFICATION => {
                let rule = self
                    .touched_any
                    .or_else(|| touched(sh))
                    .or_else(|| self.cover(sh));
                let changed = self
                    .m
                    .mask_notification(&frame.raw, rule, out)
                    .map_err(target_codec)?;
                Ok(written(changed))
            }
            be::EMPTY_QUERY | be::PORTAL_SUSPENDED => {
                self.current = None;
                Ok(Step::Pass)
            }
            be::COPY_OUT_RESPONSE => self.copy_out(sh, frame, out),
            be::COPY_DATA => match &mut self.copy {
                CopyOut::Refused => Ok(Step::Written),
                CopyOut::Binary { plan, started } => {
                    let changed = self
                        .m
                        .mask_copy_binary(frame.body(), plan, started, out)
                        .map_err(target_codec)?;
                    Ok(written(changed))
                }
                CopyOut::On { header, .. } if *header => {
                    *header = false;
                    Ok(Step::Pass)
                }
                CopyOut::On {
                    format,
                    plan,
                    mentioned,
                    ..
                } => {
                    let changed =
                        self.m
                            .mask_copy(frame.body(), *format, plan.as_deref(), *mentioned, out);
                    Ok(written(changed))
                }
                // Copy data with no CopyOutResponse seen: scan it whole.
                CopyOut::Off => {
                    let changed = self.m.mask_copy(
                        frame.body(),
                        CopyFormat::Lines,
                        None,
                        mentioned(sh).0.or_else(|| self.cover(sh)),
                        out,
                    );
                    Ok(written(changed))
                }
            },
            be::COPY_DONE if matches!(self.copy, CopyOut::Refused) => Ok(Step::Written),
            _ => Ok(Step::Pass),
        }
    }

    /// The plan for DataRows with no RowDescription in front of them: an Execute's, from
    /// its statement's Describe and its Bind's formats; otherwise scan every value as text.
    fn plan_for_rows(&self, sh: &Shared, frame: &Frame) -> Arc<RowPlan> {
        let ncols = frame
            .body()
            .first_chunk::<2>()
            .map_or(0, |b| usize::from(u16::from_be_bytes(*b)));
        let source = source(sh);
        let cover = self.cover(sh);
        let mentioned = source.and_then(|s| s.mentioned).or(cover);
        let rows = source.and_then(|s| s.rows);
        if let Some((p, formats)) = source.and_then(|s| s.exec.as_ref())
            && let Some(desc) = p.described()
            && desc.len() == ncols
        {
            return self.m.plan(
                desc.iter().enumerate().map(|(i, d)| Column {
                    name: &d.name,
                    table_oid: d.table_oid,
                    column_id: d.column_id,
                    type_oid: d.type_oid,
                    format: format_of(formats, i),
                }),
                mentioned,
                rows,
                source.and_then(|s| s.touched).or(cover),
            );
        }
        self.m.blind_plan(ncols, mentioned.or(rows))
    }

    fn copy_out(&mut self, sh: &Shared, frame: &Frame, out: &mut BytesMut) -> Result<Step> {
        let body = frame.body();
        let (Some(&format), Some(ncols)) = (body.first(), body.get(1..3)) else {
            return Err(target_codec(codec::CodecError::Malformed(
                "CopyOutResponse too short",
            )));
        };
        let ncols = usize::from(u16::from_be_bytes([ncols[0], ncols[1]]));
        let source = source(sh);
        let cover = self.cover(sh);
        let mentioned = source.and_then(|s| s.mentioned).or(cover);
        let rows = source.and_then(|s| s.rows);
        let touched = source.and_then(|s| s.touched).or(cover);
        let stmt = source.and_then(|s| parse_copy(&s.text));
        if format != 0 {
            return self.binary_copy_out(stmt.and_then(|c| c.describe), ncols, sh, out);
        }
        let format = match stmt.as_ref().map(|c| c.format) {
            Some(f @ (CopyFormat::Text { .. } | CopyFormat::Csv { .. })) => f,
            _ => CopyFormat::Lines,
        };
        let header =
            matches!(format, CopyFormat::Csv { .. }) && stmt.as_ref().is_some_and(|c| c.header);
        let mut plan = None;
        if let Some(q) = stmt.and_then(|c| c.describe) {
            match self.copy_desc.take() {
                None => return Ok(Step::Wait(Wait::DescribeCopy(q))),
                Some(Some(cols)) if cols.len() == ncols => {
                    plan = Some(self.m.plan(
                        cols.iter().map(|d| Column {
                            name: &d.name,
                            table_oid: d.table_oid,
                            column_id: d.column_id,
                            type_oid: d.type_oid,
                            format: 0,
                        }),
                        mentioned,
                        rows,
                        touched,
                    ));
                }
                Some(_) => {}
            }
        }
        let plan = plan.unwrap_or_else(|| self.m.blind_plan(ncols, mentioned.or(rows)));
        self.copy = CopyOut::On {
            format,
            plan: Some(plan),
            mentioned,
            header,
        };
        Ok(Step::Pass)
    }
}

impl Results {
    /// A binary COPY out starts: planned from the side connection's description of the
    /// copied columns in binary format, or refused in its place (an error instead of the
    /// CopyOutResponse, the data dropped) when they can't be described or a column's binary
    /// form can't be read.
    fn binary_copy_out(
        &mut self,
        describe: Option<String>,
        ncols: usize,
        sh: &Shared,
        out: &mut BytesMut,
    ) -> Result<Step> {
        let source = source(sh);
        let cover = self.cover(sh);
        let mut plan = None;
        if let Some(q) = describe {
            match self.copy_desc.take() {
                None => return Ok(Step::Wait(Wait::DescribeCopy(q))),
                Some(Some(cols)) if cols.len() == ncols => {
                    let p = self.m.plan(
                        cols.iter().map(|d| Column {
                            name: &d.name,
                            table_oid: d.table_oid,
                            column_id: d.column_id,
                            type_oid: d.type_oid,
                            format: 1,
                        }),
                        source.and_then(|s| s.mentioned).or(cover),
                        source.and_then(|s| s.rows),
                        source.and_then(|s| s.touched).or(cover),
                    );
                    if p.unreadable_binary().is_none() {
                        plan = Some(p);
                    }
                }
                Some(_) => {}
            }
        }
        let Some(plan) = plan else {
            self.copy = CopyOut::Refused;
            codec::put_error(
                out,
                "ERROR",
                "0A000",
                BINARY_COPY_REFUSED,
                Some(
                    "a copied column could not be described, or is of a type whose binary form the gateway can't read",
                ),
                None,
            );
            return Ok(Step::Written);
        };
        self.copy = CopyOut::Binary {
            plan,
            started: false,
        };
        Ok(Step::Pass)
    }
}

/// What the in-flight command's results come from, if known.
fn source(sh: &Shared) -> Option<&ResultSource> {
    sh.inflight.front().and_then(|f| f.source.as_deref())
}

impl Results {
    /// The rule masking whole the computed columns of the in-flight command, which reads a
    /// column carrying a covered composite field through an expression.
    fn cover(&self, sh: &Shared) -> Option<usize> {
        self.m.cover_rule(&source(sh)?.statements)
    }
}

/// The rule covering data the in-flight statement reads, if any.
fn touched(sh: &Shared) -> Option<usize> {
    sh.inflight
        .front()
        .and_then(|f| f.source.as_ref())
        .and_then(|s| s.touched)
}

/// The rule the in-flight statement mentions, and the one whose table's whole rows it outputs.
fn mentioned(sh: &Shared) -> (Option<usize>, Option<usize>) {
    sh.inflight
        .front()
        .and_then(|f| f.source.as_ref())
        .map_or((None, None), |s| (s.mentioned, s.rows))
}
