//! Column values inside ROW and NBCROW tokens: finding where each one ends (the relay's hot path,
//! no allocation) and handing out borrowed views of them (what masking reads).

use std::ops::Range;

use super::CodecError;
use super::metadata::ColMetadata;
use super::tokenbuf::{Rd, Step, Stop, complete};
use super::types::{LengthKind, TypeInfo};

/// PLP total length that marks NULL.
pub const PLP_NULL: u64 = u64::MAX;
/// PLP total length that says "sent in chunks, total not known in advance".
pub const PLP_UNKNOWN_LEN: u64 = u64::MAX - 1;

/// One value as it sits in the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueData<'a> {
    /// NULL (including a column marked null in an NBCROW bitmap, which has no bytes at all).
    Null,
    /// The value bytes of a fixed, byte-length or ushort-length value (prefix removed).
    Bytes(&'a [u8]),
    /// TEXT/NTEXT/IMAGE.
    Text {
        text_ptr: &'a [u8],
        timestamp: &'a [u8],
        data: &'a [u8],
    },
    /// A MAX, XML or UDT value as its chunks.
    Plp(PlpValue<'a>),
    /// SQL_VARIANT: the base type byte, its property bytes and the data.
    Variant {
        base_type: u8,
        props: &'a [u8],
        data: &'a [u8],
    },
}

/// A non-NULL PLP value; its chunks were checked when it was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlpValue<'a> {
    /// The total the server declared (may be [`PLP_UNKNOWN_LEN`]).
    pub declared_len: u64,
    /// The chunk area: (u32 length, data)* then the zero terminator.
    chunk_area: &'a [u8],
}

impl<'a> PlpValue<'a> {
    /// The data of each chunk, in order.
    pub fn chunks(&self) -> PlpChunks<'a> {
        PlpChunks {
            rd: Rd::new(self.chunk_area),
        }
    }

    /// The whole value when it came in at most one chunk (no copy needed to read it).
    pub fn contiguous(&self) -> Option<&'a [u8]> {
        let mut chunks = self.chunks();
        let first = chunks.next().unwrap_or(&[]);
        chunks.next().is_none().then_some(first)
    }

    /// Sum of the chunk lengths.
    pub fn len(&self) -> usize {
        self.chunks().map(<[u8]>::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Iterator over the chunks of a [`PlpValue`].
pub struct PlpChunks<'a> {
    rd: Rd<'a>,
}

impl<'a> Iterator for PlpChunks<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.rd.u32().ok()?).ok()?;
        if n == 0 {
            return None;
        }
        self.rd.take(n).ok()
    }
}

/// One column's value in a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Value<'a> {
    /// Index of the column in COLMETADATA.
    pub column: usize,
    /// The bytes of the value in the token, length prefix included (empty for a bitmap NULL).
    pub start: usize,
    pub end: usize,
    pub data: ValueData<'a>,
}

impl Value<'_> {
    pub fn range(&self) -> Range<usize> {
        self.start..self.end
    }
}

fn take_bounded<'a>(rd: &mut Rd<'a>, n: usize, limit: usize, what: &'static str) -> Step<&'a [u8]> {
    let end = rd.pos().saturating_add(n);
    if end > limit {
        return Err(Stop::Bad(CodecError::TooLong {
            what,
            len: end,
            max: limit,
        }));
    }
    rd.take(n)
}

fn len32(n: u32) -> usize {
    // usize is at least 32 bits on every target this gateway builds for
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Reads the value of type `ty` that starts at `pos`; returns it and where it ends. No byte past
/// `limit` is ever needed. `plp_resume` carries a partly walked PLP value between calls.
pub(crate) fn read_value<'a>(
    buf: &'a [u8],
    pos: usize,
    ty: &TypeInfo,
    limit: usize,
    plp_resume: &mut Option<usize>,
) -> Step<(ValueData<'a>, usize)> {
    let mut rd = Rd::at(buf, pos);
    let data = match ty.length {
        LengthKind::Fixed(n) => {
            ValueData::Bytes(take_bounded(&mut rd, usize::from(n), limit, "row")?)
        }
        LengthKind::ByteLen => match rd.u8()? {
            0 => ValueData::Null,
            n => ValueData::Bytes(take_bounded(&mut rd, usize::from(n), limit, "row")?),
        },
        LengthKind::UShortLen => match rd.u16()? {
            0xFFFF => ValueData::Null,
            n => ValueData::Bytes(take_bounded(&mut rd, usize::from(n), limit, "row")?),
        },
        LengthKind::LongLen => match rd.u8()? {
            0 => ValueData::Null,
            p => {
                let text_ptr = rd.take(usize::from(p))?;
                let timestamp = rd.take(8)?;
                let n = len32(rd.u32()?);
                let data = take_bounded(&mut rd, n, limit, "TEXT/NTEXT/IMAGE value")?;
                ValueData::Text {
                    text_ptr,
                    timestamp,
                    data,
                }
            }
        },
        LengthKind::Variant => match len32(rd.u32()?) {
            0 => ValueData::Null,
            n => {
                let body = take_bounded(&mut rd, n, limit, "SQL_VARIANT value")?;
                let (&base_type, rest) = body
                    .split_first()
                    .ok_or_else(|| bad("SQL_VARIANT of 1 byte"))?;
                let (&prop_len, rest) = rest
                    .split_first()
                    .ok_or_else(|| bad("SQL_VARIANT of 1 byte"))?;
                if usize::from(prop_len) > rest.len() {
                    return Err(bad("SQL_VARIANT properties run past its length"));
                }
                let (props, data) = rest.split_at(usize::from(prop_len));
                ValueData::Variant {
                    base_type,
                    props,
                    data,
                }
            }
        },
        LengthKind::Plp => return read_plp(buf, pos, limit, plp_resume),
    };
    Ok((data, rd.pos()))
}

fn bad(why: &str) -> Stop {
    Stop::Bad(CodecError::Invalid(why.to_owned()))
}

fn read_plp<'a>(
    buf: &'a [u8],
    pos: usize,
    limit: usize,
    resume: &mut Option<usize>,
) -> Step<(ValueData<'a>, usize)> {
    let declared_len = Rd::at(buf, pos).u64()?;
    let area = pos + 8;
    if declared_len == PLP_NULL {
        return Ok((ValueData::Null, area));
    }
    let mut at = resume.unwrap_or(area);
    loop {
        let mut rd = Rd::at(buf, at);
        let n = len32(rd.u32()?);
        if n == 0 {
            *resume = None;
            let end = rd.pos();
            let chunk_area = buf.get(area..end).ok_or(Stop::More)?;
            let plp = PlpValue {
                declared_len,
                chunk_area,
            };
            return Ok((ValueData::Plp(plp), end));
        }
        take_bounded(&mut rd, n, limit, "PLP value")?;
        at = rd.pos();
        *resume = Some(at);
    }
}

/// How far a partly arrived ROW/NBCROW has been checked, so the next call resumes there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RowCursor {
    col: usize,
    pos: usize,
    plp: Option<usize>,
}

/// Null bitmap bytes of an NBCROW for `n` columns.
pub(crate) fn bitmap_len(n: usize) -> usize {
    n.div_ceil(8)
}

fn is_null(bitmap: &[u8], col: usize) -> bool {
    bitmap
        .get(col / 8)
        .is_some_and(|b| b & (1 << (col % 8)) != 0)
}

/// Walks the row token at the start of `buf` from `cur`; returns its length once all of it is
/// there. Only lengths are read, nothing is allocated.
pub(crate) fn scan_row(
    buf: &[u8],
    meta: &ColMetadata,
    nbc: bool,
    cur: &mut RowCursor,
    limit: usize,
) -> Step<usize> {
    let n = meta.columns.len();
    let bitmap_end = 1 + if nbc { bitmap_len(n) } else { 0 };
    let bitmap = buf.get(1..bitmap_end).ok_or(Stop::More)?;
    if cur.pos < bitmap_end {
        *cur = RowCursor {
            col: 0,
            pos: bitmap_end,
            plp: None,
        };
    }
    while let Some(column) = meta.columns.get(cur.col) {
        if !(nbc && is_null(bitmap, cur.col)) {
            let (_, end) = read_value(buf, cur.pos, &column.type_info, limit, &mut cur.plp)?;
            cur.pos = end;
        }
        cur.col += 1;
    }
    Ok(cur.pos)
}

/// The values of a complete ROW or NBCROW token, in column order.
pub struct RowValues<'a> {
    token: &'a [u8],
    meta: &'a ColMetadata,
    bitmap: Option<&'a [u8]>,
    col: usize,
    pos: usize,
    failed: bool,
}

impl<'a> RowValues<'a> {
    /// `token` is a whole ROW (0xD1) or NBCROW (0xD2) token, as `next_token` returned it.
    pub fn new(token: &'a [u8], meta: &'a ColMetadata) -> super::Result<Self> {
        let (bitmap, pos) = match token.first() {
            Some(0xD1) => (None, 1),
            Some(0xD2) => {
                let end = 1 + bitmap_len(meta.columns.len());
                let bitmap = token
                    .get(1..end)
                    .ok_or(CodecError::Truncated("NBCROW null bitmap"))?;
                (Some(bitmap), end)
            }
            _ => return Err(CodecError::Invalid("not a ROW or NBCROW token".into())),
        };
        Ok(Self {
            token,
            meta,
            bitmap,
            col: 0,
            pos,
            failed: false,
        })
    }

    /// Offset just past the last value read so far.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for RowValues<'a> {
    type Item = super::Result<Value<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let column = self.meta.columns.get(self.col)?;
        let col = self.col;
        self.col += 1;
        let start = self.pos;
        if self.bitmap.is_some_and(|b| is_null(b, col)) {
            return Some(Ok(Value {
                column: col,
                start,
                end: start,
                data: ValueData::Null,
            }));
        }
        // complete token: a value running past its end is truncation, not a bound
        let read = read_value(self.token, start, &column.type_info, usize::MAX, &mut None);
        match complete("row value", read) {
            Ok((data, end)) => {
                self.pos = end;
                Some(Ok(Value {
                    column: col,
                    start,
                    end,
                    data,
                }))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
#[path = "values_tests.rs"]
mod tests;
