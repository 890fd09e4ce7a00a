//! Framing of tagged messages: tag byte, Int32 length (counting itself), body.

use bytes::{Bytes, BytesMut};

use super::CodecError;

/// Bytes before the body of a tagged message: the tag and the Int32 length.
pub const HEADER_LEN: usize = 5;

/// One complete tagged message: tag byte plus the whole raw message (tag, length, body).
///
/// `raw` is what goes back on the wire when the message is forwarded unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Message tag; see [`super::tags`].
    pub tag: u8,
    /// The whole message as received, header included.
    pub raw: Bytes,
}

impl Frame {
    /// The message body, after the 5-byte header.
    pub fn body(&self) -> &[u8] {
        self.raw.get(HEADER_LEN..).unwrap_or_default()
    }

    /// The body as a cheap reference-counted slice of `raw`.
    pub fn body_bytes(&self) -> Bytes {
        if self.raw.len() >= HEADER_LEN {
            self.raw.slice(HEADER_LEN..)
        } else {
            Bytes::new()
        }
    }
}

/// Splits one complete tagged message off the front of `buf` if it is all there.
///
/// Returns `Ok(None)` when more bytes are needed. The length field is checked as soon as the
/// 5-byte header is present: below 4 is [`CodecError::BadLength`], above `max` is
/// [`CodecError::TooLong`], both before any of the body is awaited. Nothing is allocated here:
/// the frame shares `buf`'s storage, and `buf` only grows as the caller reads real bytes into it.
pub fn next_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, CodecError> {
    let Some(&[tag, a, b, c, d]) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = usize::try_from(u32::from_be_bytes([a, b, c, d])).unwrap_or(usize::MAX);
    if len < 4 {
        return Err(CodecError::BadLength { tag, len });
    }
    if len > max {
        return Err(CodecError::TooLong { tag, len, max });
    }
    // The length field does not count the tag byte.
    let total = len
        .checked_add(1)
        .ok_or(CodecError::TooLong { tag, len, max })?;
    if buf.len() < total {
        return Ok(None);
    }
    let raw = buf.split_to(total).freeze();
    Ok(Some(Frame { tag, raw }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(u32::try_from(body.len()).unwrap() + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn waits_for_header_and_body() {
        let msg = message(b'Q', b"select 1\0");
        let mut buf = BytesMut::new();
        for (i, &byte) in msg.iter().enumerate() {
            assert_eq!(next_frame(&mut buf, 1024).unwrap(), None, "at byte {i}");
            buf.extend_from_slice(&[byte]);
        }
        let frame = next_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(frame.tag, b'Q');
        assert_eq!(&frame.raw[..], &msg[..]);
        assert_eq!(frame.body(), b"select 1\0");
        assert_eq!(&frame.body_bytes()[..], b"select 1\0");
        assert!(buf.is_empty());
    }

    #[test]
    fn splits_back_to_back_messages_and_keeps_the_rest() {
        let mut input = message(b'S', b"");
        input.extend(message(b'X', b""));
        input.extend(&message(b'Q', b"abc\0")[..3]);
        let mut buf = BytesMut::from(&input[..]);
        assert_eq!(next_frame(&mut buf, 64).unwrap().unwrap().tag, b'S');
        let x = next_frame(&mut buf, 64).unwrap().unwrap();
        assert_eq!((x.tag, x.body()), (b'X', &b""[..]));
        assert_eq!(next_frame(&mut buf, 64).unwrap(), None);
        assert_eq!(buf.len(), 3);
    }

    #[test]
    fn too_long_is_reported_from_the_header_alone() {
        let mut buf = BytesMut::from(&[b'D', 0x7f, 0xff, 0xff, 0xff][..]);
        let err = next_frame(&mut buf, DEFAULT_MAX).unwrap_err();
        assert_eq!(
            err,
            CodecError::TooLong {
                tag: b'D',
                len: 0x7fff_ffff,
                max: DEFAULT_MAX
            }
        );
        // A length of exactly the limit is fine and just waits for the body.
        let mut buf = BytesMut::from(&[b'D', 0, 0, 0, 100][..]);
        assert_eq!(next_frame(&mut buf, 100).unwrap(), None);
        let mut buf = BytesMut::from(&[b'D', 0, 0, 0, 101][..]);
        assert!(matches!(
            next_frame(&mut buf, 100),
            Err(CodecError::TooLong { len: 101, .. })
        ));
        let mut buf = BytesMut::from(&[b'D', 0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(next_frame(&mut buf, usize::MAX), Ok(None)));
    }

    const DEFAULT_MAX: usize = super::super::DEFAULT_MAX_MESSAGE;

    #[test]
    fn length_below_four_is_rejected() {
        for len in 0u8..4 {
            let mut buf = BytesMut::from(&[b'Q', 0, 0, 0, len][..]);
            assert_eq!(
                next_frame(&mut buf, 1024).unwrap_err(),
                CodecError::BadLength {
                    tag: b'Q',
                    len: usize::from(len)
                }
            );
        }
    }

    #[test]
    fn body_of_a_hand_built_short_frame_is_empty() {
        let frame = Frame {
            tag: b'Q',
            raw: Bytes::from_static(b"Q\0"),
        };
        assert!(frame.body().is_empty());
        assert!(frame.body_bytes().is_empty());
    }
}
