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

/// Bytes at most in a PRELOGIN; real ones are under 100.
pub const MAX_PRELOGIN_LEN: usize = 4096;
/// Bytes at most in the INSTOPT instance name.
const MAX_INSTANCE_LEN: usize = 256;

/// `data` as exactly `N` bytes.
fn fixed<const N: usize>(data: &[u8], what: &'static str) -> Result<[u8; N]> {
    data.try_into().map_err(|_| {
        CodecError::Invalid(format!(
            "PRELOGIN {what} has {} bytes, expected {N}",
            data.len()
        ))
    })
}

fn once<T>(slot: &mut Option<T>, value: T, what: &'static str) -> Result<()> {
    if slot.replace(value).is_some() {
        return Err(CodecError::Invalid(format!(
            "PRELOGIN {what} appears twice"
        )));
    }
    Ok(())
}

impl PreLogin {
    /// Parses a PRELOGIN payload. Option data lies after the option table and inside the
    /// payload; an option given twice, a known option of the wrong size and an unknown
    /// encryption mode are errors.
    pub fn parse(p: &[u8]) -> Result<PreLogin> {
        if p.len() > MAX_PRELOGIN_LEN {
            return Err(CodecError::TooLong {
                what: "PRELOGIN",
                len: p.len(),
                max: MAX_PRELOGIN_LEN,
            });
        }
        let mut entries = Vec::new();
        let mut at = 0;
        loop {
            let ty = *p
                .get(at)
                .ok_or(CodecError::Truncated("PRELOGIN option table"))?;
            if ty == TERMINATOR {
                at += 1;
                break;
            }
            if entries.len() == MAX_OPTIONS {
                return Err(CodecError::TooLong {
                    what: "PRELOGIN option table",
                    len: MAX_OPTIONS + 1,
                    max: MAX_OPTIONS,
                });
            }
            let entry = p
                .get(at + 1..at + 5)
                .ok_or(CodecError::Truncated("PRELOGIN option table"))?;
            at += 5;
            let off = usize::from(u16::from_be_bytes([entry[0], entry[1]]));
            let len = usize::from(u16::from_be_bytes([entry[2], entry[3]]));
            entries.push((ty, off, len));
        }
        let table_end = at;
        let mut out = PreLogin::default();
        let mut version = None;
        let mut encryption = None;
        for (ty, off, len) in entries {
            if len > 0 && off < table_end {
                return Err(CodecError::Invalid(format!(
                    "PRELOGIN option {ty:#04x} data overlaps the option table"
                )));
            }
            let data = p
                .get(off..off + len)
                .ok_or(CodecError::Truncated("PRELOGIN option data"))?;
            match ty {
                VERSION => {
                    let d: [u8; 6] = fixed(data, "VERSION")?;
                    let v = Version {
                        major: d[0],
                        minor: d[1],
                        build: u16::from_be_bytes([d[2], d[3]]),
                        sub_build: u16::from_le_bytes([d[4], d[5]]),
                    };
                    once(&mut version, v, "VERSION")?;
                }
                ENCRYPTION => {
                    let [e] = fixed(data, "ENCRYPTION")?;
                    // The client-certificate bit (0x80) is not a mode.
                    let mode = e & 0x7f;
                    if mode > ENCRYPT_REQ {
                        return Err(CodecError::Invalid(format!(
                            "unknown PRELOGIN encryption mode {mode:#04x}"
                        )));
                    }
                    once(&mut encryption, mode, "ENCRYPTION")?;
                }
                INSTOPT => {
                    if len > MAX_INSTANCE_LEN {
                        return Err(CodecError::TooLong {
                            what: "PRELOGIN INSTOPT",
                            len,
                            max: MAX_INSTANCE_LEN,
                        });
                    }
                    once(&mut out.instance, data.to_vec(), "INSTOPT")?;
                }
                // A server's THREADID is empty.
                THREADID if len == 0 => {}
                THREADID => {
                    let t = u32::from_be_bytes(fixed(data, "THREADID")?);
                    once(&mut out.thread_id, t, "THREADID")?;
                }
                MARS => once(&mut out.mars, fixed::<1>(data, "MARS")?[0], "MARS")?,
                TRACEID => {
                    let t: [u8; 36] = fixed(data, "TRACEID")?;
                    once(&mut out.trace_id, t.to_vec(), "TRACEID")?;
                }
                FEDAUTHREQUIRED => {
                    let [f] = fixed(data, "FEDAUTHREQUIRED")?;
                    once(&mut out.fed_auth_required, f, "FEDAUTHREQUIRED")?;
                }
                NONCEOPT => once(&mut out.nonce, fixed(data, "NONCE")?, "NONCE")?,
                other => {
                    if out.other.iter().any(|(t, _)| *t == other) {
                        return Err(CodecError::Invalid(format!(
                            "PRELOGIN option {other:#04x} appears twice"
                        )));
                    }
                    out.other.push((other, data.to_vec()));
                }
            }
        }
        out.version =
            version.ok_or_else(|| CodecError::Invalid("PRELOGIN without VERSION".into()))?;
        out.encryption = encryption.unwrap_or(ENCRYPT_OFF);
        Ok(out)
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

    /// A client PRELOGIN as a TDS 7.4 driver sends it: VERSION, ENCRYPTION, INSTOPT,
    /// THREADID, MARS, FEDAUTHREQUIRED, terminator, then the data.
    fn client_fixture() -> Vec<u8> {
        let mut v = vec![
            0x00, 0x00, 0x1F, 0x00, 0x06, // VERSION at 31, 6 bytes
            0x01, 0x00, 0x25, 0x00, 0x01, // ENCRYPTION at 37
            0x02, 0x00, 0x26, 0x00, 0x01, // INSTOPT at 38
            0x03, 0x00, 0x27, 0x00, 0x04, // THREADID at 39
            0x04, 0x00, 0x2B, 0x00, 0x01, // MARS at 43
            0x06, 0x00, 0x2C, 0x00, 0x01, // FEDAUTHREQUIRED at 44
            0xFF,
        ];
        v.extend_from_slice(&[0x10, 0x00, 0x07, 0xD0, 0x00, 0x00]);
        v.push(ENCRYPT_ON);
        v.push(0x00);
        v.extend_from_slice(&[0x00, 0x00, 0x12, 0x34]);
        v.push(0x00);
        v.push(0x01);
        v
    }

    #[test]
    fn a_drivers_prelogin_and_the_mock_servers_answer_are_read() {
        let p = PreLogin::parse(&client_fixture()).unwrap();
        assert_eq!((p.version.major, p.version.build), (16, 2000));
        assert_eq!(p.encryption, ENCRYPT_ON);
        assert_eq!(p.instance.as_deref(), Some(&[0u8][..]));
        assert_eq!(p.thread_id, Some(0x1234));
        assert_eq!((p.mars, p.fed_auth_required), (Some(0), Some(1)));
        // The mock's answer: VERSION, ENCRYPTION (not supported), FEDAUTHREQUIRED.
        let server = [
            0x00, 0x00, 0x10, 0x00, 0x06, 0x01, 0x00, 0x16, 0x00, 0x01, 0x06, 0x00, 0x17, 0x00,
            0x01, 0xFF, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x01,
        ];
        let p = PreLogin::parse(&server).unwrap();
        assert_eq!(p.encryption, ENCRYPT_NOT_SUP);
        // A server's empty THREADID is no thread id.
        let mut empty = vec![0x00, 0, 11, 0, 6, 0x03, 0, 17, 0, 0, 0xFF];
        empty.extend_from_slice(&[16, 0, 0, 0, 0, 0]);
        assert_eq!(PreLogin::parse(&empty).unwrap().thread_id, None);
    }

    #[test]
    fn repeated_misplaced_misshapen_and_oversized_options_are_errors() {
        let base = client_fixture();
        // ENCRYPTION's data pointing into the option table.
        let mut overlap = base.clone();
        overlap[7] = 0x03;
        assert!(PreLogin::parse(&overlap).is_err());
        // ENCRYPTION of two bytes.
        let mut two = base.clone();
        two[9] = 2;
        assert!(PreLogin::parse(&two).is_err());
        // MARS twice (the FEDAUTHREQUIRED entry renamed).
        let mut twice = base.clone();
        twice[25] = 0x04;
        assert!(PreLogin::parse(&twice).is_err());
        // An encryption mode that does not exist.
        let mut mode = base.clone();
        mode[37] = 0x05;
        assert!(PreLogin::parse(&mode).is_err());
        mode[37] = 0x83;
        assert_eq!(PreLogin::parse(&mode).unwrap().encryption, ENCRYPT_REQ);
        // A VERSION of five bytes.
        let mut short = base.clone();
        short[4] = 5;
        assert!(PreLogin::parse(&short).is_err());
        let mut big = base;
        big.resize(MAX_PRELOGIN_LEN + 1, 0);
        assert!(matches!(
            PreLogin::parse(&big),
            Err(CodecError::TooLong { .. })
        ));
    }
}
