//! A bounds-checked reader over a byte slice: every read past the end is a `Truncated` error,
//! never a panic, and a length is only turned into a slice after it is checked.

use super::{CodecError, Result};

/// Reads little- and big-endian integers and byte runs from a slice.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The next byte, not consumed.
    pub fn peek_u8(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// The next `n` bytes; `what` names the field in the error.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(CodecError::Truncated(what))?;
        let out = self
            .buf
            .get(self.pos..end)
            .ok_or(CodecError::Truncated(what))?;
        self.pos = end;
        Ok(out)
    }

    /// Everything not yet read.
    pub fn rest(&mut self) -> &'a [u8] {
        let out = self.buf.get(self.pos..).unwrap_or_default();
        self.pos = self.buf.len();
        out
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    /// A byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    /// A little-endian u16.
    pub fn u16_le(&mut self, what: &'static str) -> Result<u16> {
        self.array(what).map(u16::from_le_bytes)
    }

    /// A big-endian u16.
    pub fn u16_be(&mut self, what: &'static str) -> Result<u16> {
        self.array(what).map(u16::from_be_bytes)
    }

    /// A little-endian u32.
    pub fn u32_le(&mut self, what: &'static str) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    /// A big-endian u32.
    pub fn u32_be(&mut self, what: &'static str) -> Result<u32> {
        self.array(what).map(u32::from_be_bytes)
    }

    /// A little-endian i32.
    pub fn i32_le(&mut self, what: &'static str) -> Result<i32> {
        self.array(what).map(i32::from_le_bytes)
    }

    /// A little-endian u64.
    pub fn u64_le(&mut self, what: &'static str) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }
}

/// `len` as a `usize` checked against `max`, for lengths read from the wire.
pub fn bounded(what: &'static str, len: u64, max: usize) -> Result<usize> {
    match usize::try_from(len) {
        Ok(n) if n <= max => Ok(n),
        _ => Err(CodecError::TooLong {
            what,
            len: usize::try_from(len).unwrap_or(usize::MAX),
            max,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_in_both_byte_orders() {
        let mut c = Cursor::new(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(c.u16_le("a").unwrap(), 0x0201);
        assert_eq!(c.u16_be("b").unwrap(), 0x0304);
        assert_eq!(c.u32_le("c").unwrap(), 0x0807_0605);
        assert_eq!(c.remaining(), 1);
        assert_eq!(c.peek_u8(), Some(9));
        assert_eq!(c.rest(), &[9]);
        assert!(c.is_empty());
    }

    #[test]
    fn short_read_is_truncated_and_consumes_nothing() {
        let mut c = Cursor::new(&[1, 2, 3]);
        assert_eq!(c.u32_le("field"), Err(CodecError::Truncated("field")));
        assert_eq!(c.pos(), 0);
        assert_eq!(
            c.take(usize::MAX, "huge"),
            Err(CodecError::Truncated("huge"))
        );
    }

    #[test]
    fn bounded_rejects_over_max() {
        assert_eq!(bounded("x", 10, 10), Ok(10));
        assert!(matches!(
            bounded("x", 11, 10),
            Err(CodecError::TooLong {
                len: 11,
                max: 10,
                ..
            })
        ));
        assert!(bounded("x", u64::MAX, usize::MAX - 1).is_err());
    }
}
