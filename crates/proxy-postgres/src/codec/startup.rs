//! The untagged packets a client sends first: SSLRequest, GSSENCRequest, CancelRequest and
//! StartupMessage. Each is an Int32 length (counting itself) and an Int32 code.

use bytes::{Buf, BytesMut};

use super::reader::Reader;
use super::{CodecError, MAX_STARTUP};

/// Protocol 3.0, the version every current client and server speaks.
pub const PROTOCOL_3_0: u32 = 3 << 16;
/// Protocol 3.2 (PostgreSQL 18): longer cancel keys.
pub const PROTOCOL_3_2: u32 = (3 << 16) | 2;
/// Code of an SSLRequest.
pub const SSL_REQUEST_CODE: u32 = (1234 << 16) | 5679;
/// Code of a GSSENCRequest.
pub const GSSENC_REQUEST_CODE: u32 = (1234 << 16) | 5680;
/// Code of a CancelRequest.
pub const CANCEL_REQUEST_CODE: u32 = (1234 << 16) | 5678;
/// Shortest cancel key accepted (the fixed size in protocol 3.0).
pub const MIN_CANCEL_KEY: usize = 4;
/// Longest cancel key accepted (the protocol 3.2 limit).
pub const MAX_CANCEL_KEY: usize = 256;

/// One untagged startup-phase packet from a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartupPacket {
    /// The client asks to switch to TLS.
    SslRequest,
    /// The client asks to switch to GSSAPI encryption.
    GssEncRequest,
    /// The client asks to cancel the query running on another connection.
    Cancel {
        /// Process id from that connection's BackendKeyData.
        pid: i32,
        /// Secret key: 4 bytes in protocol 3.0, up to 256 in 3.2.
        key: Vec<u8>,
    },
    /// The client opens a session.
    Startup {
        /// [`PROTOCOL_3_0`] or [`PROTOCOL_3_2`].
        version: u32,
        /// Parameters in the order sent (`user`, `database`, `options`, `_pq_.*`, ...).
        params: Vec<(String, String)>,
    },
}

/// Takes one untagged startup-phase packet off the front of `buf` if it is all there.
///
/// The length is checked against [`MAX_STARTUP`] before the body is awaited. Only protocol 3.0
/// and 3.2 are accepted; any other version or request code is
/// [`CodecError::UnsupportedProtocol`]. After an SSLRequest or GSSENCRequest the caller must
/// check that `buf` is empty before starting the handshake: bytes a client sent ahead of the
/// handshake were not protected by it and must not be treated as if they were.
pub fn next_startup(buf: &mut BytesMut) -> Result<Option<StartupPacket>, CodecError> {
    let Some(&len) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
    // Length field plus the request code.
    if len < 8 {
        return Err(CodecError::BadLength { tag: 0, len });
    }
    if len > MAX_STARTUP {
        return Err(CodecError::TooLong {
            tag: 0,
            len,
            max: MAX_STARTUP,
        });
    }
    let Some(body) = buf.get(4..len) else {
        return Ok(None);
    };
    let packet = parse_startup_body(body, len)?;
    buf.advance(len);
    Ok(Some(packet))
}

fn parse_startup_body(body: &[u8], len: usize) -> Result<StartupPacket, CodecError> {
    let mut r = Reader::new(body);
    let code = r.u32()?;
    match code {
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE => {
            if r.remaining() != 0 {
                return Err(CodecError::BadLength { tag: 0, len });
            }
            Ok(if code == SSL_REQUEST_CODE {
                StartupPacket::SslRequest
            } else {
                StartupPacket::GssEncRequest
            })
        }
        CANCEL_REQUEST_CODE => {
            let pid = r.i32()?;
            let key = r.rest();
            if !(MIN_CANCEL_KEY..=MAX_CANCEL_KEY).contains(&key.len()) {
                return Err(CodecError::BadLength { tag: 0, len });
            }
            Ok(StartupPacket::Cancel {
                pid,
                key: key.to_vec(),
            })
        }
        PROTOCOL_3_0 | PROTOCOL_3_2 => {
            // Pairs of NUL-terminated strings, closed by an empty name (one extra NUL) that
            // must be the last byte, as PostgreSQL itself requires.
            let mut params = Vec::new();
            loop {
                let name = r.cstr()?;
                if name.is_empty() {
                    break;
                }
                let value = r.cstr()?;
                params.push((name.to_owned(), value.to_owned()));
            }
            r.finish()?;
            Ok(StartupPacket::Startup {
                version: code,
                params,
            })
        }
        other => Err(CodecError::UnsupportedProtocol(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: u32, rest: &[u8]) -> BytesMut {
        let mut v = BytesMut::new();
        v.extend_from_slice(&(u32::try_from(rest.len()).unwrap() + 8).to_be_bytes());
        v.extend_from_slice(&code.to_be_bytes());
        v.extend_from_slice(rest);
        v
    }

    #[test]
    fn ssl_and_gssenc_requests() {
        let mut buf = packet(SSL_REQUEST_CODE, b"");
        assert_eq!(
            next_startup(&mut buf).unwrap(),
            Some(StartupPacket::SslRequest)
        );
        assert!(buf.is_empty());
        let mut buf = packet(GSSENC_REQUEST_CODE, b"");
        assert_eq!(
            next_startup(&mut buf).unwrap(),
            Some(StartupPacket::GssEncRequest)
        );
        let mut buf = packet(SSL_REQUEST_CODE, b"xx");
        assert!(matches!(
            next_startup(&mut buf),
            Err(CodecError::BadLength { len: 10, .. })
        ));
    }

    #[test]
    fn startup_3_0_and_3_2_with_params() {
        for version in [PROTOCOL_3_0, PROTOCOL_3_2] {
            let mut buf = packet(version, b"user\0alice\0database\0orders\0\0");
            buf.extend_from_slice(b"next");
            let got = next_startup(&mut buf).unwrap().unwrap();
            assert_eq!(
                got,
                StartupPacket::Startup {
                    version,
                    params: vec![
                        ("user".into(), "alice".into()),
                        ("database".into(), "orders".into())
                    ],
                }
            );
            assert_eq!(&buf[..], b"next", "only the packet is consumed");
        }
    }

    #[test]
    fn startup_layout_errors() {
        for rest in [
            &b""[..],               // no terminator at all
            b"user\0alice\0",       // missing the final NUL
            b"user\0alice\0\0junk", // bytes after the terminator
            b"user\0",              // name without value
            b"user\0al\xffice\0\0", // not UTF-8
        ] {
            let mut buf = packet(PROTOCOL_3_0, rest);
            assert!(
                matches!(next_startup(&mut buf), Err(CodecError::Malformed(_))),
                "{rest:?}"
            );
        }
    }

    #[test]
    fn other_versions_are_unsupported() {
        for version in [
            2 << 16,
            (3 << 16) | 1,
            (3 << 16) | 3,
            4 << 16,
            (1234 << 16) | 5681,
        ] {
            let mut buf = packet(version, b"user\0a\0\0");
            assert_eq!(
                next_startup(&mut buf).unwrap_err(),
                CodecError::UnsupportedProtocol(version)
            );
        }
    }

    #[test]
    fn cancel_request_with_short_and_long_keys() {
        let mut rest = 42i32.to_be_bytes().to_vec();
        rest.extend_from_slice(&[1, 2, 3, 4]);
        let mut buf = packet(CANCEL_REQUEST_CODE, &rest);
        assert_eq!(buf.len(), 16);
        assert_eq!(
            next_startup(&mut buf).unwrap(),
            Some(StartupPacket::Cancel {
                pid: 42,
                key: vec![1, 2, 3, 4]
            })
        );

        let mut rest = (-7i32).to_be_bytes().to_vec();
        rest.extend_from_slice(&[9; MAX_CANCEL_KEY]);
        let mut buf = packet(CANCEL_REQUEST_CODE, &rest);
        assert_eq!(
            next_startup(&mut buf).unwrap(),
            Some(StartupPacket::Cancel {
                pid: -7,
                key: vec![9; MAX_CANCEL_KEY]
            })
        );

        for key_len in [0, 3, MAX_CANCEL_KEY + 1] {
            let mut rest = 1i32.to_be_bytes().to_vec();
            rest.extend(vec![0; key_len]);
            let mut buf = packet(CANCEL_REQUEST_CODE, &rest);
            assert!(
                matches!(next_startup(&mut buf), Err(CodecError::BadLength { .. })),
                "key of {key_len} bytes"
            );
        }
        // Too short to hold even the pid.
        let mut buf = packet(CANCEL_REQUEST_CODE, &[0, 0]);
        assert!(next_startup(&mut buf).is_err());
    }

    #[test]
    fn length_checks_come_before_the_body() {
        let mut buf = BytesMut::from(&[0, 0, 0x27, 0x11][..]); // 10_001
        assert_eq!(
            next_startup(&mut buf).unwrap_err(),
            CodecError::TooLong {
                tag: 0,
                len: 10_001,
                max: MAX_STARTUP
            }
        );
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            next_startup(&mut buf),
            Err(CodecError::TooLong { .. })
        ));
        for len in 0u8..8 {
            let mut buf = BytesMut::from(&[0, 0, 0, len][..]);
            assert_eq!(
                next_startup(&mut buf).unwrap_err(),
                CodecError::BadLength {
                    tag: 0,
                    len: usize::from(len)
                }
            );
        }
        // Partial packets wait.
        let mut buf = BytesMut::from(&[0, 0, 0][..]);
        assert_eq!(next_startup(&mut buf).unwrap(), None);
        let full = packet(PROTOCOL_3_0, b"user\0a\0\0");
        let mut buf = BytesMut::from(&full[..full.len() - 1]);
        assert_eq!(next_startup(&mut buf).unwrap(), None);
        assert_eq!(buf.len(), full.len() - 1);
    }
}
