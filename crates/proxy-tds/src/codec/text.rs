//! UCS-2 / UTF-16LE text as TDS carries it.

use super::cursor::Cursor;
use super::{CodecError, Result};

/// Decode UTF-16LE. Invalid UTF-16 (an unpaired surrogate) is an error: the gateway must see
/// exactly what the server would run, so such text is refused rather than repaired.
pub fn decode(b: &[u8], what: &'static str) -> Result<String> {
    if !b.len().is_multiple_of(2) {
        return Err(CodecError::Invalid(format!(
            "{what}: odd number of UTF-16 bytes"
        )));
    }
    let units = b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]));
    char::decode_utf16(units)
        .collect::<std::result::Result<String, _>>()
        .map_err(|_| CodecError::Invalid(format!("{what}: invalid UTF-16")))
}

/// Append `s` as UTF-16LE.
pub fn encode_into(out: &mut Vec<u8>, s: &str) {
    for u in s.encode_utf16() {
        out.extend_from_slice(&u.to_le_bytes());
    }
}

/// `s` as UTF-16LE.
pub fn encode(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() * 2);
    encode_into(&mut v, s);
    v
}

/// UTF-16 code units in `s`.
pub fn units(s: &str) -> usize {
    s.encode_utf16().count()
}

/// A B_VARCHAR (byte count of characters, then UTF-16LE) at the start of `b`: the text and
/// the bytes used.
pub fn b_varchar(b: &[u8], what: &'static str) -> Result<(String, usize)> {
    let n = usize::from(*b.first().ok_or(CodecError::Truncated(what))?) * 2;
    let raw = b.get(1..1 + n).ok_or(CodecError::Truncated(what))?;
    Ok((decode(raw, what)?, 1 + n))
}

/// A US_VARCHAR (u16 count of characters, then UTF-16LE) at the start of `b`.
pub fn us_varchar(b: &[u8], what: &'static str) -> Result<(String, usize)> {
    let len = b.get(..2).ok_or(CodecError::Truncated(what))?;
    let n = usize::from(u16::from_le_bytes([len[0], len[1]])) * 2;
    let raw = b.get(2..2 + n).ok_or(CodecError::Truncated(what))?;
    Ok((decode(raw, what)?, 2 + n))
}

/// `chars` UTF-16 units of text at the cursor.
pub fn read_utf16_chars(cur: &mut Cursor<'_>, chars: usize, what: &'static str) -> Result<String> {
    let len = chars.checked_mul(2).ok_or(CodecError::Truncated(what))?;
    decode(cur.take(len, what)?, what)
}

/// A B_VARCHAR at the cursor: a byte count of UTF-16 units, then the text.
pub fn read_b_varchar(cur: &mut Cursor<'_>, what: &'static str) -> Result<String> {
    let chars = usize::from(cur.u8(what)?);
    read_utf16_chars(cur, chars, what)
}

/// A US_VARCHAR at the cursor of at most `max_chars` UTF-16 units.
pub fn read_us_varchar(
    cur: &mut Cursor<'_>,
    what: &'static str,
    max_chars: usize,
) -> Result<String> {
    let chars = usize::from(cur.u16_le(what)?);
    if chars > max_chars {
        return Err(CodecError::TooLong {
            what,
            len: chars,
            max: max_chars,
        });
    }
    read_utf16_chars(cur, chars, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_broken_utf16() {
        let s = "SELECT N'é€😀'";
        assert_eq!(decode(&encode(s), "t").unwrap(), s);
        assert!(decode(&[0x00, 0xD8], "t").is_err(), "unpaired surrogate");
        assert!(decode(&[0x41], "t").is_err());
        let mut bv = vec![2u8];
        bv.extend(encode("ab"));
        assert_eq!(b_varchar(&bv, "t").unwrap(), ("ab".to_string(), 5));
        assert!(b_varchar(&[3, 0x61, 0], "t").is_err());
        let mut uv = vec![1u8, 0];
        uv.extend(encode("x"));
        assert_eq!(us_varchar(&uv, "t").unwrap(), ("x".to_string(), 4));
    }

    #[test]
    fn cursor_readers_bound_and_refuse_short_text() {
        let mut b = vec![3u8];
        b.extend(encode("@p1"));
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend(encode("ok"));
        let mut cur = Cursor::new(&b);
        assert_eq!(read_b_varchar(&mut cur, "n").unwrap(), "@p1");
        assert_eq!(read_us_varchar(&mut cur, "p", 2).unwrap(), "ok");
        assert!(cur.is_empty());
        let mut cur = Cursor::new(&[0xFF, 0x00, b'a', 0]);
        assert!(matches!(
            read_us_varchar(&mut cur, "p", 128),
            Err(CodecError::TooLong { len: 255, .. })
        ));
        let mut cur = Cursor::new(&[0x05, 0x00, b'a', 0]);
        assert_eq!(
            read_us_varchar(&mut cur, "p", 128),
            Err(CodecError::Truncated("p"))
        );
        let mut cur = Cursor::new(&[0x02, b'a']);
        assert_eq!(
            read_b_varchar(&mut cur, "b"),
            Err(CodecError::Truncated("b"))
        );
    }
}
