//! PRELOGIN: the option table both sides send first (version, encryption, FEDAUTHREQUIRED…).
//!
//! The payload starts with option tokens (type, big-endian offset and length into the
//! payload), ended by 0xFF, then the option data. Unknown options are kept raw.

use super::{CodecError, Result};

pub const ENCRYPT_OFF: u8 = 0x00;
pub const ENCRYPT_ON: u8 = 0x01;
pub const ENCRYPT_NOT_SUP: u8 = 0x02;
pub const ENCRYPT_REQ: u8 = 0x03;

const VERSION: u8 = 0x00;
const ENCRYPTION: u8 = 0x01;
const INSTOPT: u8 = 0x02;
const THREADID: u8 = 0x03;
const MARS: u8 = 0x04;
const TRACEID: u8 = 0x05;
const FEDAUTHREQUIRED: u8 = 0x06;
const NONCEOPT: u8 = 0x07;
const TERMINATOR: u8 = 0xFF;

/// Options at most; a PRELOGIN has a handful.
const MAX_OPTIONS: usize = 32;

/// The sender's version: major, minor, build (big-endian), sub-build.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Version {
    pub major: u8,
    pub minor: u8,
    pub build: u16,
    pub sub_build: u16,
}

/// The version the gateway states in its own PRELOGINs (SQL Server 2022's major version, so
/// drivers enable what they enable for it).
pub const GATEWAY_VERSION: Version = Version {
    major: 16,
    minor: 0,
    build: 1000,
    sub_build: 0,
};

/// A parsed PRELOGIN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreLogin {
    pub version: Version,
    /// One of the `ENCRYPT_*` values (the client-certificate bit 0x80 stripped).
    pub encryption: u8,
    pub instance: Option<Vec<u8>>,
    pub thread_id: Option<u32>,
    pub mars: Option<u8>,
    pub trace_id: Option<Vec<u8>>,
    pub fed_auth_required: Option<u8>,
    pub nonce: Option<[u8; 32]>,
    /// Options this parser does not know: kept, never re-sent by the gateway.
    pub other: Vec<(u8, Vec<u8>)>,
}

impl PreLogin {
    pub fn parse(p: &[u8]) -> Result<PreLogin> {
        let mut out = PreLogin::default();
        let mut at = 0;
        let mut seen_version = false;
        for _ in 0..=MAX_OPTIONS {
            let ty = *p
                .get(at)
                .ok_or(CodecError::Truncated("PRELOGIN option table"))?;
            if ty == TERMINATOR {
                if !seen_version {
                    return Err(CodecError::Invalid("PRELOGIN without VERSION".into()));
                }
                return Ok(out);
            }
            let entry = p
                .get(at + 1..at + 5)
                .ok_or(CodecError::Truncated("PRELOGIN option table"))?;
            at += 5;
            let off = usize::from(u16::from_be_bytes([entry[0], entry[1]]));
            let len = usize::from(u16::from_be_bytes([entry[2], entry[3]]));
            let data = p
                .get(off..off + len)
                .ok_or(CodecError::Truncated("PRELOGIN option data"))?;
            match ty {
                VERSION => {
                    if len < 6 {
                        return Err(CodecError::Invalid("PRELOGIN VERSION too short".into()));
                    }
                    seen_version = true;
                    out.version = Version {
                        major: data[0],
                        minor: data[1],
                        build: u16::from_be_bytes([data[2], data[3]]),
                        sub_build: u16::from_le_bytes([data[4], data[5]]),
                    };
                }
                ENCRYPTION => {
                    let e = *data
                        .first()
                        .ok_or(CodecError::Invalid("empty PRELOGIN ENCRYPTION".into()))?;
                    out.encryption = e & 0x7f;
                }
                INSTOPT => out.instance = Some(data.to_vec()),
                THREADID => {
                    out.thread_id = data
                        .get(..4)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                }
                MARS => out.mars = data.first().copied(),
                TRACEID => out.trace_id = Some(data.to_vec()),
                FEDAUTHREQUIRED => out.fed_auth_required = data.first().copied(),
                NONCEOPT => {
                    let n: [u8; 32] = data.try_into().map_err(|_| {
                        CodecError::Invalid("PRELOGIN NONCE is not 32 bytes".into())
                    })?;
                    out.nonce = Some(n);
                }
                other => out.other.push((other, data.to_vec())),
            }
        }
        Err(CodecError::TooLong {
            what: "PRELOGIN option table",
            len: MAX_OPTIONS + 1,
            max: MAX_OPTIONS,
        })
    }

    /// The payload of this PRELOGIN: version, encryption, then what is set (unknown options
    /// are not re-sent).
    pub fn encode(&self) -> Vec<u8> {
        let mut opts: Vec<(u8, Vec<u8>)> = Vec::with_capacity(8);
        let v = self.version;
        let mut version = vec![v.major, v.minor];
        version.extend_from_slice(&v.build.to_be_bytes());
        version.extend_from_slice(&v.sub_build.to_le_bytes());
        opts.push((VERSION, version));
        opts.push((ENCRYPTION, vec![self.encryption]));
        if let Some(i) = &self.instance {
            opts.push((INSTOPT, i.clone()));
        }
        if let Some(t) = self.thread_id {
            opts.push((THREADID, t.to_be_bytes().to_vec()));
        }
        if let Some(m) = self.mars {
            opts.push((MARS, vec![m]));
        }
        if let Some(t) = &self.trace_id {
            opts.push((TRACEID, t.clone()));
        }
        if let Some(f) = self.fed_auth_required {
            opts.push((FEDAUTHREQUIRED, vec![f]));
        }
        if let Some(n) = &self.nonce {
            opts.push((NONCEOPT, n.to_vec()));
        }
        let table = opts.len() * 5 + 1;
        let mut out = Vec::with_capacity(table + 64);
        let mut off = table;
        for (ty, data) in &opts {
            out.push(*ty);
            out.extend_from_slice(&u16::try_from(off).unwrap_or(u16::MAX).to_be_bytes());
            out.extend_from_slice(&u16::try_from(data.len()).unwrap_or(u16::MAX).to_be_bytes());
            off += data.len();
        }
        out.push(TERMINATOR);
        for (_, data) in &opts {
            out.extend_from_slice(data);
        }
        out
    }
}

/// What a connection's first byte says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstBytes {
    /// A TDS packet (PRELOGIN).
    Tds,
    /// A TLS handshake record: a TDS 8.0 strict client.
    TlsClientHello,
    Unknown,
}

pub fn first_bytes_kind(b: &[u8]) -> FirstBytes {
    match b.first() {
        Some(0x12) => FirstBytes::Tds,
        Some(0x16) => FirstBytes::TlsClientHello,
        _ => FirstBytes::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_what_it_does_not_know() {
        let p = PreLogin {
            version: Version {
                major: 16,
                minor: 0,
                build: 1000,
                sub_build: 6,
            },
            encryption: ENCRYPT_ON,
            instance: Some(vec![0]),
            thread_id: Some(7),
            mars: Some(0),
            fed_auth_required: Some(1),
            ..PreLogin::default()
        };
        let back = PreLogin::parse(&p.encode()).unwrap();
        assert_eq!(back, p);
        // An unknown option (0x20) is kept.
        let mut raw = vec![0x00, 0, 11, 0, 6, 0x20, 0, 17, 0, 2, 0xFF];
        raw.extend_from_slice(&[9, 0, 0, 1, 0, 0, 0xAB, 0xCD]);
        let q = PreLogin::parse(&raw).unwrap();
        assert_eq!(q.version.major, 9);
        assert_eq!(q.other, vec![(0x20, vec![0xAB, 0xCD])]);
    }

    #[test]
    fn out_of_range_offsets_and_missing_terminators_are_errors() {
        assert!(PreLogin::parse(&[0x00, 0, 6, 0, 6]).is_err());
        assert!(PreLogin::parse(&[0x00, 0, 200, 0, 6, 0xFF]).is_err());
        assert!(PreLogin::parse(&[0xFF]).is_err(), "no VERSION");
        let mut many = Vec::new();
        for _ in 0..40 {
            many.extend_from_slice(&[0x30, 0, 0, 0, 0]);
        }
        assert!(PreLogin::parse(&many).is_err());
    }

    #[test]
    fn the_client_certificate_bit_is_not_an_encryption_mode() {
        let mut p = PreLogin {
            encryption: ENCRYPT_REQ,
            ..PreLogin::default()
        }
        .encode();
        // ENCRYPTION's data byte follows VERSION's six.
        let idx = p.len() - 1;
        p[idx] |= 0x80;
        assert_eq!(PreLogin::parse(&p).unwrap().encryption, ENCRYPT_REQ);
        assert_eq!(first_bytes_kind(&[0x16, 3, 1]), FirstBytes::TlsClientHello);
        assert_eq!(first_bytes_kind(&[0x12]), FirstBytes::Tds);
    }
}
