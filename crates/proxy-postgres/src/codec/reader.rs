//! A bounds-checked cursor over a message body. Every read that would run past the end returns
//! an error instead of panicking, which is what lets the decoders take arbitrary bytes.

use super::CodecError;

const TRUNCATED: CodecError = CodecError::Malformed("message body ends early");

/// Cursor over a borrowed body; strings and byte runs it returns borrow from the body.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Takes exactly `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if n > self.buf.len() {
            return Err(TRUNCATED);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Exactly `N` bytes as an array.
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        self.take(N)?.try_into().map_err(|_| TRUNCATED)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, CodecError> {
        let [b] = self.array::<1>()?;
        Ok(b)
    }

    pub(crate) fn i16(&mut self) -> Result<i16, CodecError> {
        self.array().map(i16::from_be_bytes)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, CodecError> {
        self.array().map(u16::from_be_bytes)
    }

    pub(crate) fn i32(&mut self) -> Result<i32, CodecError> {
        self.array().map(i32::from_be_bytes)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, CodecError> {
        self.array().map(u32::from_be_bytes)
    }

    /// A NUL-terminated UTF-8 string; the NUL is consumed but not returned.
    pub(crate) fn cstr(&mut self) -> Result<&'a str, CodecError> {
        let nul = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(CodecError::Malformed("string is not NUL-terminated"))?;
        let s = self.take(nul)?;
        self.take(1)?;
        std::str::from_utf8(s).map_err(|_| CodecError::Malformed("string is not valid UTF-8"))
    }

    /// An Int32 length (-1 for NULL) followed by that many bytes, as in Bind and DataRow.
    pub(crate) fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, CodecError> {
        match self.i32()? {
            -1 => Ok(None),
            n => {
                let n = usize::try_from(n)
                    .map_err(|_| CodecError::Malformed("negative value length"))?;
                self.take(n).map(Some)
            }
        }
    }

    /// Everything not read yet.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// Checks that nothing is left over: trailing bytes mean the peer and the codec disagree
    /// about the layout, and forwarding such a message could desynchronise the two sides.
    pub(crate) fn finish(self) -> Result<(), CodecError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(CodecError::Malformed("trailing bytes after message body"))
        }
    }

    /// Reserves room for `count` items of at least `min_size` bytes each, refusing counts the
    /// rest of the body cannot hold, so a forged count never drives a large allocation.
    pub(crate) fn vec_for<T>(&self, count: usize, min_size: usize) -> Result<Vec<T>, CodecError> {
        if count.saturating_mul(min_size) > self.buf.len() {
            return Err(CodecError::Malformed("item count exceeds message body"));
        }
        Ok(Vec::with_capacity(count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_integers_big_endian() {
        let mut r = Reader::new(&[0, 1, 0xff, 0xfe, 0, 0, 1, 0, 7]);
        assert_eq!(r.u16().unwrap(), 1);
        assert_eq!(r.i16().unwrap(), -2);
        assert_eq!(r.i32().unwrap(), 256);
        assert_eq!(r.u8().unwrap(), 7);
        assert!(r.u8().is_err());
        r.finish().unwrap();
    }

    #[test]
    fn cstr_needs_terminator_and_utf8() {
        assert_eq!(Reader::new(b"abc\0").cstr().unwrap(), "abc");
        assert!(Reader::new(b"abc").cstr().is_err());
        assert!(Reader::new(b"\xff\0").cstr().is_err());
        let mut r = Reader::new(b"\0x");
        assert_eq!(r.cstr().unwrap(), "");
        assert!(r.finish().is_err());
    }

    #[test]
    fn nullable_bytes_rejects_negative_and_short() {
        assert_eq!(
            Reader::new(&(-1i32).to_be_bytes())
                .nullable_bytes()
                .unwrap(),
            None
        );
        assert!(
            Reader::new(&(-2i32).to_be_bytes())
                .nullable_bytes()
                .is_err()
        );
        assert!(Reader::new(&[0, 0, 0, 3, 1, 2]).nullable_bytes().is_err());
        let mut r = Reader::new(&[0, 0, 0, 2, 1, 2]);
        assert_eq!(r.nullable_bytes().unwrap(), Some(&[1u8, 2][..]));
    }

    #[test]
    fn vec_for_refuses_counts_the_body_cannot_hold() {
        let r = Reader::new(&[0; 8]);
        assert!(r.vec_for::<u32>(2, 4).is_ok());
        assert!(r.vec_for::<u32>(3, 4).is_err());
        assert!(r.vec_for::<u32>(usize::MAX, 4).is_err());
    }
}
