//! A cursor over token-stream bytes that tells "the bytes stop here, more may come" apart from
//! "this is malformed", plus the UCS-2 helpers the token codec needs.

use super::CodecError;

/// Why a read stopped: the buffer ends before the field does, or the bytes are wrong.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The field runs past the end of what has arrived; not an error for a stream.
    More,
    /// Malformed or refused.
    Bad(CodecError),
}

impl From<CodecError> for Stop {
    fn from(e: CodecError) -> Self {
        Stop::Bad(e)
    }
}

pub(crate) type Step<T> = std::result::Result<T, Stop>;

/// Turns "need more" into `None` at the edge of the public API.
pub(crate) fn need_more<T>(r: Step<T>) -> super::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(Stop::More) => Ok(None),
        Err(Stop::Bad(e)) => Err(e),
    }
}

/// Inside a token whose extent is already known, running out of bytes is malformed.
pub(crate) fn complete<T>(what: &'static str, r: Step<T>) -> super::Result<T> {
    match r {
        Ok(v) => Ok(v),
        Err(Stop::More) => Err(CodecError::Truncated(what)),
        Err(Stop::Bad(e)) => Err(e),
    }
}

/// Borrowing cursor; every read checks the length first.
#[derive(Clone)]
pub(crate) struct Rd<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Rd<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn at(buf: &'a [u8], pos: usize) -> Self {
        Self { buf, pos }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn take(&mut self, n: usize) -> Step<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(Stop::More)?;
        let bytes = self.buf.get(self.pos..end).ok_or(Stop::More)?;
        self.pos = end;
        Ok(bytes)
    }

    pub(crate) fn skip(&mut self, n: usize) -> Step<()> {
        self.take(n).map(|_| ())
    }

    fn array<const N: usize>(&mut self) -> Step<[u8; N]> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Step<u8> {
        self.array::<1>().map(|[b]| b)
    }

    pub(crate) fn u16(&mut self) -> Step<u16> {
        self.array().map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self) -> Step<u32> {
        self.array().map(u32::from_le_bytes)
    }

    pub(crate) fn u32_be(&mut self) -> Step<u32> {
        self.array().map(u32::from_be_bytes)
    }

    pub(crate) fn i32(&mut self) -> Step<i32> {
        self.array().map(i32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self) -> Step<u64> {
        self.array().map(u64::from_le_bytes)
    }

    pub(crate) fn bytes4(&mut self) -> Step<[u8; 4]> {
        self.array()
    }

    pub(crate) fn bytes5(&mut self) -> Step<[u8; 5]> {
        self.array()
    }

    /// B_VARBYTE: a byte count, then the bytes.
    pub(crate) fn b_varbyte(&mut self) -> Step<&'a [u8]> {
        let n = usize::from(self.u8()?);
        self.take(n)
    }

    /// B_VARCHAR: a count of UCS-2 units in one byte, then the units.
    pub(crate) fn b_varchar(&mut self) -> Step<String> {
        let n = usize::from(self.u8()?);
        self.take(n * 2).map(ucs2_to_string)
    }

    /// US_VARCHAR: a count of UCS-2 units in two bytes, then the units.
    pub(crate) fn us_varchar(&mut self) -> Step<String> {
        let n = usize::from(self.u16()?);
        self.take(n * 2).map(ucs2_to_string)
    }

    pub(crate) fn skip_b_varchar(&mut self) -> Step<()> {
        let n = usize::from(self.u8()?);
        self.skip(n * 2)
    }

    pub(crate) fn skip_us_varchar(&mut self) -> Step<()> {
        let n = usize::from(self.u16()?);
        self.skip(n * 2)
    }
}

/// Decodes UTF-16LE, replacing unpaired surrogates and a dangling odd byte with U+FFFD.
pub(crate) fn ucs2_to_string(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() / 2);
    decode_ucs2_into(bytes, &mut s);
    s
}

/// Appends the decoded UTF-16LE `bytes` to `out` (lossy, as `ucs2_to_string`).
pub(crate) fn decode_ucs2_into(bytes: &[u8], out: &mut String) {
    let units = bytes
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]));
    out.extend(char::decode_utf16(units).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)));
    if bytes.len() % 2 == 1 {
        out.push(char::REPLACEMENT_CHARACTER);
    }
}

/// Number of UTF-16 code units `s` encodes to.
pub(crate) fn ucs2_units(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// Appends `s` as UTF-16LE.
pub(crate) fn put_ucs2(out: &mut impl bytes::BufMut, s: &str) {
    for unit in s.encode_utf16() {
        out.put_u16_le(unit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stop_with_more_at_the_end() {
        let mut rd = Rd::new(&[1, 2, 3]);
        assert_eq!(rd.u16().unwrap(), 0x0201);
        assert!(matches!(rd.u16(), Err(Stop::More)));
        // a failed read does not move the cursor
        assert_eq!(rd.u8().unwrap(), 3);
        assert_eq!(rd.pos(), 3);
    }

    #[test]
    fn varchar_forms() {
        let mut rd = Rd::new(&[2, b'h', 0, b'i', 0, 1, 0, b'x', 0, 3, 9]);
        assert_eq!(rd.b_varchar().unwrap(), "hi");
        assert_eq!(rd.us_varchar().unwrap(), "x");
        assert!(matches!(rd.b_varbyte(), Err(Stop::More)));
    }

    #[test]
    fn ucs2_lossy_decoding() {
        assert_eq!(ucs2_to_string(&[0x3D, 0xD8, 0x00, 0xDE]), "\u{1F600}");
        assert_eq!(ucs2_to_string(&[0x00, 0xD8, b'a', 0]), "\u{FFFD}a");
        assert_eq!(ucs2_to_string(&[b'a', 0, b'b']), "a\u{FFFD}");
        assert_eq!(ucs2_units("a\u{1F600}"), 3);
    }

    #[test]
    fn huge_counts_do_not_overflow() {
        let mut rd = Rd::at(&[0; 4], 2);
        assert!(matches!(rd.take(usize::MAX), Err(Stop::More)));
    }
}
