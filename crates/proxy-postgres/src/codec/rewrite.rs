//! Rewriting of messages whose values are masked: DataRow, ErrorResponse / NoticeResponse.
//! Pure functions over bytes. Nothing is written until the first value changes, so a message
//! that needs no change costs a scan and no copy; a changed one is written once, straight into
//! the caller's output buffer, from the unchanged spans of the input and the replacements.

use bytes::{BufMut, BytesMut};
use gateway_core::masking::Masked;

use super::reader::Reader;
use super::{CodecError, HEADER_LEN};

/// Copies `src` into `out` span by span once something changes: `at` is where the rewritten
/// message starts in `out` (None until the first change), `from` the input offset copied so far.
struct Splice<'a> {
    src: &'a [u8],
    out: &'a mut BytesMut,
    at: Option<usize>,
    from: usize,
}

impl<'a> Splice<'a> {
    fn new(src: &'a [u8], out: &'a mut BytesMut) -> Splice<'a> {
        Splice {
            src,
            out,
            at: None,
            from: 0,
        }
    }

    /// Replace `src[start..end]` by what `write` appends.
    fn replace(&mut self, start: usize, end: usize, write: impl FnOnce(&mut BytesMut)) {
        if self.at.is_none() {
            self.at = Some(self.out.len());
        }
        self.out.extend_from_slice(&self.src[self.from..start]);
        write(self.out);
        self.from = end;
    }

    /// Finish: copy the rest and fix the message length. `Ok(false)` when nothing changed
    /// (the caller forwards the original bytes).
    fn finish(self) -> Result<bool, CodecError> {
        let Some(at) = self.at else {
            return Ok(false);
        };
        self.out.extend_from_slice(&self.src[self.from..]);
        // The length counts itself but not the tag byte.
        let len = self.out.len() - at - 1;
        let Ok(len) = i32::try_from(len) else {
            self.out.truncate(at);
            return Err(CodecError::Malformed("masked message longer than 2 GiB"));
        };
        self.out[at + 1..at + HEADER_LEN].copy_from_slice(&len.to_be_bytes());
        Ok(true)
    }

    /// Undo a partial rewrite.
    fn abort(self) {
        if let Some(at) = self.at {
            self.out.truncate(at);
        }
    }
}

/// Masks the values of one DataRow (`raw` is the whole message, header included).
///
/// `mask(column, value, scratch)` decides each non-NULL value: `Unchanged`, `Replaced` (the
/// new value is in `scratch`) or `Null`. Returns `Ok(true)` when a rewritten message was
/// appended to `out`, `Ok(false)` when nothing changed (nothing appended: forward `raw`).
/// On error nothing is appended.
pub fn rewrite_data_row(
    raw: &[u8],
    scratch: &mut Vec<u8>,
    out: &mut BytesMut,
    mut mask: impl FnMut(usize, &[u8], &mut Vec<u8>) -> Masked,
) -> Result<bool, CodecError> {
    let body = raw
        .get(HEADER_LEN..)
        .ok_or(CodecError::Malformed("message shorter than its header"))?;
    let mut s = Splice::new(raw, out);
    let result = (|| {
        let mut r = Reader::new(body);
        let count = usize::from(r.u16()?);
        for col in 0..count {
            let start = HEADER_LEN + body.len() - r.remaining();
            let Some(value) = r.nullable_bytes()? else {
                continue;
            };
            let end = HEADER_LEN + body.len() - r.remaining();
            match mask(col, value, scratch) {
                Masked::Unchanged => {}
                Masked::Null => s.replace(start, end, |o| o.put_i32(-1)),
                Masked::Replaced => {
                    let len = i32::try_from(scratch.len())
                        .map_err(|_| CodecError::Malformed("masked value longer than 2 GiB"))?;
                    s.replace(start, end, |o| {
                        o.put_i32(len);
                        o.extend_from_slice(scratch);
                    });
                }
            }
        }
        r.finish()
    })();
    match result {
        Ok(()) => s.finish(),
        Err(e) => {
            s.abort();
            Err(e)
        }
    }
}

/// Field types of an ErrorResponse / NoticeResponse whose text can echo data: message,
/// detail, hint, context and the internal query.
const ECHO_FIELDS: &[u8] = b"MDHWq";

/// Masks the free-text fields of an ErrorResponse or NoticeResponse (`raw` whole).
///
/// `mask(field_type, text, scratch)` decides each of the message, detail, hint, context and
/// internal-query fields; a replacement has any NUL bytes dropped (they would end the field).
/// Returns as [`rewrite_data_row`] does.
pub fn rewrite_error_fields(
    raw: &[u8],
    scratch: &mut Vec<u8>,
    out: &mut BytesMut,
    mut mask: impl FnMut(u8, &[u8], &mut Vec<u8>) -> Masked,
) -> Result<bool, CodecError> {
    let body = raw
        .get(HEADER_LEN..)
        .ok_or(CodecError::Malformed("message shorter than its header"))?;
    let mut s = Splice::new(raw, out);
    let mut pos = 0;
    let result = loop {
        let Some(&kind) = body.get(pos) else {
            break Err(CodecError::Malformed("message body ends early"));
        };
        if kind == 0 {
            break if pos + 1 == body.len() {
                Ok(())
            } else {
                Err(CodecError::Malformed("trailing bytes after message body"))
            };
        }
        let text_start = pos + 1;
        let Some(nul) = body[text_start..].iter().position(|&b| b == 0) else {
            break Err(CodecError::Malformed("string is not NUL-terminated"));
        };
        let text_end = text_start + nul;
        if ECHO_FIELDS.contains(&kind) {
            let text = &body[text_start..text_end];
            let (start, end) = (HEADER_LEN + text_start, HEADER_LEN + text_end);
            match mask(kind, text, scratch) {
                Masked::Unchanged => {}
                Masked::Null => s.replace(start, end, |_| {}),
                Masked::Replaced => s.replace(start, end, |o| {
                    for part in scratch.split(|&b| b == 0) {
                        o.extend_from_slice(part);
                    }
                }),
            }
        }
        pos = text_end + 1;
    };
    match result {
        Ok(()) => s.finish(),
        Err(e) => {
            s.abort();
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{parse_data_row, parse_error_fields, put_data_row, put_error};

    fn row(values: &[Option<&[u8]>]) -> BytesMut {
        let mut b = BytesMut::new();
        put_data_row(&mut b, values).unwrap();
        b
    }

    #[test]
    fn unchanged_row_appends_nothing() {
        let raw = row(&[Some(b"1"), None, Some(b"ada")]);
        let mut out = BytesMut::new();
        let mut scratch = Vec::new();
        let changed =
            rewrite_data_row(&raw, &mut scratch, &mut out, |_, _, _| Masked::Unchanged).unwrap();
        assert!(!changed);
        assert!(out.is_empty());
    }

    #[test]
    fn replaced_and_nulled_values_give_a_valid_row() {
        let raw = row(&[Some(b"1"), Some(b"ada@example.com"), None, Some(b"x")]);
        let mut out = BytesMut::from(&b"prefix"[..]);
        let mut scratch = Vec::new();
        let changed = rewrite_data_row(&raw, &mut scratch, &mut out, |col, _, s| match col {
            1 => {
                s.clear();
                s.extend_from_slice(b"[REDACTED:email]");
                Masked::Replaced
            }
            3 => Masked::Null,
            _ => Masked::Unchanged,
        })
        .unwrap();
        assert!(changed);
        assert_eq!(&out[..6], b"prefix");
        let mut buf = out.split_off(6);
        let frame = crate::codec::next_frame(&mut buf, 1 << 20)
            .unwrap()
            .unwrap();
        assert!(buf.is_empty());
        assert_eq!(
            parse_data_row(frame.body()).unwrap(),
            vec![Some(&b"1"[..]), Some(&b"[REDACTED:email]"[..]), None, None]
        );
    }

    #[test]
    fn malformed_row_is_an_error_and_appends_nothing() {
        let mut raw = row(&[Some(b"abc"), Some(b"def")]).to_vec();
        raw.truncate(raw.len() - 1);
        let mut out = BytesMut::new();
        let mut scratch = Vec::new();
        let r = rewrite_data_row(&raw, &mut scratch, &mut out, |_, _, _| Masked::Null);
        assert!(r.is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn error_detail_is_masked_and_other_fields_kept() {
        let mut raw = BytesMut::new();
        put_error(
            &mut raw,
            "ERROR",
            "23505",
            "duplicate key value violates unique constraint \"c_email\"",
            Some("Key (email)=(ada@example.com) already exists."),
            None,
        );
        let mut out = BytesMut::new();
        let mut scratch = Vec::new();
        let changed = rewrite_error_fields(&raw, &mut scratch, &mut out, |kind, text, s| {
            if kind == b'D' {
                s.clear();
                s.extend_from_slice(&text[..13]);
                s.extend_from_slice(b"[REDACTED:email]\0) already exists.");
                Masked::Replaced
            } else {
                Masked::Unchanged
            }
        })
        .unwrap();
        assert!(changed);
        let frame = crate::codec::next_frame(&mut out, 1 << 20)
            .unwrap()
            .unwrap();
        let f = parse_error_fields(frame.body()).unwrap();
        assert_eq!(f.code, "23505");
        assert_eq!(
            f.detail,
            Some("Key (email)=([REDACTED:email]) already exists.")
        );
        assert!(f.message.starts_with("duplicate key"));
    }
}
