//! Masking character values in ROW, NBCROW and RETURNVALUE tokens.
//!
//! The callback sees each non-NULL character value as text and returns `Some(replacement)` to
//! change it. A token where nothing changed is reported as such and nothing is written, so the
//! caller forwards the original bytes. A changed token is rebuilt into the caller's buffer:
//! untouched values are copied byte for byte, changed ones are re-encoded in the column's
//! encoding with their length prefix recomputed.
//!
//! A replacement longer than a non-MAX column's declared length is cut to fit (at a character
//! boundary): clients size buffers from COLMETADATA, and the masked text is the gateway's to
//! shape. CHAR/NCHAR replacements are blank-padded to the full width, as the server sends them.
//! MAX values are written as one chunk and the terminator; TEXT/NTEXT keep their text pointer
//! and timestamp.

use bytes::{BufMut, BytesMut};

use super::CodecError;
use super::charset;
use super::metadata::{ColMetadata, ReturnValue};
use super::tokenbuf::complete;
use super::types::{CharEncoding, LengthKind, TypeInfo, variant_char_encoding};
use super::values::{RowValues, ValueData, read_value};

/// The outcome of masking one token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Masked {
    /// Nothing changed; forward the original token. Nothing was written.
    Unchanged,
    /// A new token was appended to the output buffer.
    Rewritten,
}

/// Scratch buffers reused from row to row, so unchanged rows cost no allocation beyond the
/// decoding of UTF-16 (or non-ASCII) values into a reused `String`.
#[derive(Debug, Default)]
pub struct RowMasker {
    text: String,
    joined: Vec<u8>,
    encoded: Vec<u8>,
}

/// The encoding of a value, when it is character data.
fn encoding_of(data: &ValueData<'_>, ty: &TypeInfo) -> Option<CharEncoding> {
    match data {
        ValueData::Variant {
            base_type, props, ..
        } => variant_char_encoding(*base_type, props),
        ValueData::Null => None,
        _ => ty.char_encoding(),
    }
}

impl RowMasker {
    pub fn new() -> Self {
        Self::default()
    }

    /// The text of a character value (borrowed from the token when it is already valid text,
    /// else decoded into a reused buffer); `None` for NULL and non-character values.
    pub fn text_of<'a>(&'a mut self, data: ValueData<'a>, ty: &TypeInfo) -> Option<&'a str> {
        let encoding = encoding_of(&data, ty)?;
        let bytes = match data {
            ValueData::Bytes(b) => b,
            ValueData::Text { data, .. } | ValueData::Variant { data, .. } => data,
            ValueData::Plp(plp) => match plp.contiguous() {
                Some(b) => b,
                None => {
                    // chunks may split a character, so they are joined before decoding
                    self.joined.clear();
                    plp.chunks().for_each(|c| self.joined.extend_from_slice(c));
                    &self.joined
                }
            },
            ValueData::Null => return None,
        };
        Some(charset::decode(bytes, encoding, &mut self.text))
    }

    /// Masks one complete ROW or NBCROW `token` read against `meta`. `mask(column, text)` is
    /// called for each non-NULL character value. On [`Masked::Rewritten`] the new token has been
    /// appended to `out`.
    pub fn mask_row<F>(
        &mut self,
        token: &[u8],
        meta: &ColMetadata,
        out: &mut BytesMut,
        mut mask: F,
    ) -> super::Result<Masked>
    where
        F: FnMut(usize, &str) -> Option<String>,
    {
        if !meta.has_text() {
            return Ok(Masked::Unchanged);
        }
        let mut copied = 0;
        for value in RowValues::new(token, meta)? {
            let value = value?;
            let ty = &meta.columns[value.column].type_info;
            let Some(encoding) = encoding_of(&value.data, ty) else {
                continue;
            };
            let Some(new) = self.replacement(value.data, ty, |text| mask(value.column, text))
            else {
                continue;
            };
            out.extend_from_slice(token.get(copied..value.start).unwrap_or_default());
            write_value(out, &value.data, ty, encoding, &new, &mut self.encoded)?;
            copied = value.end;
        }
        if copied == 0 {
            return Ok(Masked::Unchanged);
        }
        out.extend_from_slice(token.get(copied..).unwrap_or_default());
        Ok(Masked::Rewritten)
    }

    /// Masks the value of a RETURNVALUE `token` (an output parameter) described by `rv`.
    pub fn mask_return_value<F>(
        &mut self,
        token: &[u8],
        rv: &ReturnValue,
        out: &mut BytesMut,
        mask: F,
    ) -> super::Result<Masked>
    where
        F: FnOnce(&str) -> Option<String>,
    {
        let ty = &rv.type_info;
        if !ty.may_hold_text() {
            return Ok(Masked::Unchanged);
        }
        let read = read_value(token, rv.value.start, ty, usize::MAX, &mut None);
        let (data, end) = complete("RETURNVALUE value", read)?;
        if end != rv.value.end {
            return Err(CodecError::Invalid(
                "RETURNVALUE does not match its token".into(),
            ));
        }
        let Some(encoding) = encoding_of(&data, ty) else {
            return Ok(Masked::Unchanged);
        };
        let Some(new) = self.replacement(data, ty, mask) else {
            return Ok(Masked::Unchanged);
        };
        out.extend_from_slice(token.get(..rv.value.start).unwrap_or_default());
        write_value(out, &data, ty, encoding, &new, &mut self.encoded)?;
        out.extend_from_slice(token.get(end..).unwrap_or_default());
        Ok(Masked::Rewritten)
    }

    /// The callback's replacement when it differs from the current text.
    fn replacement(
        &mut self,
        data: ValueData<'_>,
        ty: &TypeInfo,
        mask: impl FnOnce(&str) -> Option<String>,
    ) -> Option<String> {
        let text = self.text_of(data, ty)?;
        mask(text).filter(|new| new != text)
    }
}

fn too_long(what: &'static str, len: usize, max: usize) -> CodecError {
    CodecError::TooLong { what, len, max }
}

/// Writes a character value holding `text`, in the shape of the value it replaces.
fn write_value(
    out: &mut BytesMut,
    old: &ValueData<'_>,
    ty: &TypeInfo,
    encoding: CharEncoding,
    text: &str,
    buf: &mut Vec<u8>,
) -> super::Result<()> {
    buf.clear();
    charset::encode(text, encoding, buf);
    let declared = usize::try_from(ty.max_len).unwrap_or(usize::MAX);
    match (ty.length, old) {
        (LengthKind::UShortLen, ValueData::Bytes(_)) => {
            charset::truncate(buf, declared, encoding);
            if ty.is_blank_padded() {
                charset::pad(buf, declared, encoding);
            }
            let len = u16::try_from(buf.len()).map_err(|_| too_long("value", buf.len(), 8000))?;
            out.put_u16_le(len);
            out.extend_from_slice(buf);
        }
        (LengthKind::Plp, ValueData::Plp(_)) => {
            let len = u32::try_from(buf.len())
                .map_err(|_| too_long("PLP chunk", buf.len(), u32::MAX as usize))?;
            out.put_u64_le(u64::from(len));
            if len > 0 {
                out.put_u32_le(len);
                out.extend_from_slice(buf);
            }
            out.put_u32_le(0);
        }
        (
            LengthKind::LongLen,
            ValueData::Text {
                text_ptr,
                timestamp,
                ..
            },
        ) => {
            let max = declared.min(i32::MAX as usize);
            charset::truncate(buf, max, encoding);
            let len =
                u32::try_from(buf.len()).map_err(|_| too_long("TEXT value", buf.len(), max))?;
            let ptr_len = u8::try_from(text_ptr.len())
                .map_err(|_| too_long("text pointer", text_ptr.len(), 255))?;
            out.put_u8(ptr_len);
            out.extend_from_slice(text_ptr);
            out.extend_from_slice(timestamp);
            out.put_u32_le(len);
            out.extend_from_slice(buf);
        }
        (
            LengthKind::Variant,
            ValueData::Variant {
                base_type, props, ..
            },
        ) => {
            // string properties: collation (5 bytes) then the declared maximum length
            let max = props
                .get(5..7)
                .map_or(0, |m| usize::from(u16::from_le_bytes([m[0], m[1]])));
            charset::truncate(buf, max, encoding);
            if matches!(base_type, 0xAF | 0xEF) {
                charset::pad(buf, max, encoding);
            }
            let prop_len = u8::try_from(props.len())
                .map_err(|_| too_long("variant properties", props.len(), 255))?;
            let total = 2 + props.len() + buf.len();
            if total > declared {
                return Err(too_long("SQL_VARIANT value", total, declared));
            }
            let total =
                u32::try_from(total).map_err(|_| too_long("SQL_VARIANT value", total, declared))?;
            out.put_u32_le(total);
            out.put_u8(*base_type);
            out.put_u8(prop_len);
            out.extend_from_slice(props);
            out.extend_from_slice(buf);
        }
        _ => {
            return Err(CodecError::Invalid(format!(
                "cannot rewrite a {:?} value",
                ty.data_type
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "rows_tests.rs"]
mod tests;
