//! Binary COPY out, field by field: the file header (signature, flags, header extension) in
//! front of the first row, then per row an int16 field count and per field an int32 length
//! (-1 for NULL) and the value in its type's binary form, and the trailer (-1). PostgreSQL
//! sends the header with the first row and then one row per CopyData message; a row split
//! across messages is refused (nothing of it is relayed unmasked).

use bytes::{BufMut, BytesMut};
use gateway_core::masking::Masked;

use crate::codec::CodecError;
use crate::codec::reader::Reader;

/// `PGCOPY\n\377\r\n\0`.
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

fn bad(what: &'static str) -> CodecError {
    CodecError::Malformed(what)
}

/// Mask one CopyData payload of a binary COPY. `started`: the header was seen. `mask(column,
/// value, out)` decides each non-NULL field. Appends a rewritten CopyData message to `out`
/// and returns true when something changed; appends nothing and returns false otherwise.
pub(crate) fn rewrite(
    data: &[u8],
    started: &mut bool,
    scratch: &mut Vec<u8>,
    out: &mut BytesMut,
    mut mask: impl FnMut(usize, &[u8], &mut Vec<u8>) -> Masked,
) -> Result<bool, CodecError> {
    let mut r = Reader::new(data);
    if !*started {
        let sig = r.take(SIGNATURE.len())?;
        if sig != SIGNATURE {
            return Err(bad("binary COPY signature"));
        }
        let flags = r.u32()?;
        // Bit 16: rows carry OIDs (gone since PostgreSQL 12); other high bits are critical.
        if flags & 0xffff_0000 != 0 {
            return Err(bad("binary COPY flags this gateway can't read"));
        }
        let ext = usize::try_from(r.u32()?).map_err(|_| bad("binary COPY header"))?;
        r.take(ext)?;
        *started = true;
    }
    let at = out.len();
    let mut from = 0;
    let mut changed = false;
    let result = (|| {
        while r.remaining() > 0 {
            let n = r.i16()?;
            if n == -1 {
                if r.remaining() != 0 {
                    return Err(bad("data after the binary COPY trailer"));
                }
                break;
            }
            let n = usize::try_from(n).map_err(|_| bad("binary COPY field count"))?;
            for col in 0..n {
                let start = data.len() - r.remaining();
                let Some(v) = r.nullable_bytes()? else {
                    continue;
                };
                let end = data.len() - r.remaining();
                let m = mask(col, v, scratch);
                if m == Masked::Unchanged {
                    continue;
                }
                if !changed {
                    changed = true;
                    out.put_u8(b'd');
                    out.put_u32(0);
                }
                out.extend_from_slice(&data[from..start]);
                from = end;
                match m {
                    Masked::Null => out.put_i32(-1),
                    _ => {
                        let len = i32::try_from(scratch.len())
                            .map_err(|_| bad("masked value longer than 2 GiB"))?;
                        out.put_i32(len);
                        out.extend_from_slice(scratch);
                    }
                }
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        out.truncate(at);
        return Err(e);
    }
    if !changed {
        return Ok(false);
    }
    out.extend_from_slice(&data[from..]);
    let len = u32::try_from(out.len() - at - 1).map_err(|_| bad("CopyData longer than 4 GiB"))?;
    out[at + 1..at + 5].copy_from_slice(&len.to_be_bytes());
    Ok(true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// A binary COPY row of nullable fields.
    fn row(fields: &[Option<&[u8]>]) -> Vec<u8> {
        let mut v = (fields.len() as i16).to_be_bytes().to_vec();
        for f in fields {
            match f {
                None => v.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(b) => {
                    v.extend_from_slice(&(b.len() as i32).to_be_bytes());
                    v.extend_from_slice(b);
                }
            }
        }
        v
    }

    fn header() -> Vec<u8> {
        let mut v = SIGNATURE.to_vec();
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(&0u32.to_be_bytes());
        v
    }

    /// Column 1 holding `secret` becomes `[x]`; column 2 becomes NULL.
    fn mask(col: usize, v: &[u8], s: &mut Vec<u8>) -> Masked {
        match (col, v) {
            (1, b"secret") => {
                s.clear();
                s.extend_from_slice(b"[x]");
                Masked::Replaced
            }
            (2, _) => Masked::Null,
            _ => Masked::Unchanged,
        }
    }

    #[test]
    fn fields_are_rewritten_with_consistent_lengths() {
        let mut data = header();
        data.extend(row(&[Some(b"1"), Some(b"secret"), Some(b"n")]));
        let (mut started, mut scratch, mut out) = (false, Vec::new(), BytesMut::new());
        assert!(rewrite(&data, &mut started, &mut scratch, &mut out, mask).unwrap());
        assert!(started);
        let mut want = header();
        want.extend(row(&[Some(b"1"), Some(b"[x]"), None]));
        assert_eq!(out[0], b'd');
        assert_eq!(&out[1..5], &((want.len() + 4) as u32).to_be_bytes());
        assert_eq!(&out[5..], &want[..]);
        // A row with nothing to mask, then the trailer: passed as is.
        let mut data = row(&[Some(b"2"), Some(b"plain")]);
        data.extend_from_slice(&(-1i16).to_be_bytes());
        let mut out = BytesMut::new();
        assert!(!rewrite(&data, &mut started, &mut scratch, &mut out, mask).unwrap());
        assert!(out.is_empty());
    }

    #[test]
    fn malformed_data_is_an_error_and_writes_nothing() {
        let mut data = header();
        data.extend(row(&[Some(b"1"), Some(b"secret")]));
        let (mut scratch, mut out) = (Vec::new(), BytesMut::new());
        // A row cut short, a bad signature, critical flags, data after the trailer.
        let cut = &data[..data.len() - 2];
        assert!(rewrite(cut, &mut false, &mut scratch, &mut out, mask).is_err());
        assert!(out.is_empty());
        let mut bad = data.clone();
        bad[0] = b'X';
        assert!(rewrite(&bad, &mut false, &mut scratch, &mut out, mask).is_err());
        let mut flags = data.clone();
        flags[11] = 0x80;
        assert!(rewrite(&flags, &mut false, &mut scratch, &mut out, mask).is_err());
        let mut after = (-1i16).to_be_bytes().to_vec();
        after.push(0);
        assert!(rewrite(&after, &mut true, &mut scratch, &mut out, mask).is_err());
        assert!(out.is_empty());
    }
}
