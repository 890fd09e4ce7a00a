//! LOGIN7: who the client is and how it authenticates, including the FEDAUTH feature
//! extension that carries an access token.
//!
//! A fixed 94-byte part (lengths and flags, little-endian), then an offset/length table into
//! the variable part (UTF-16LE strings; lengths in characters), then, with fExtension, the
//! FeatureExt block: `id, u32 length, data` until 0xFF.

use super::fedauth::{FedAuth, FedAuthLibrary};
use super::text;
use super::{CodecError, Result};

const FIXED: usize = 94;
/// The fixed part of the TDS 7.0/7.1 layout, without ibChangePassword, cbChangePassword and
/// cbSSPILong: some clients send it at TDS 7.4 too (FreeTDS 1.5 as pymssql 2.4 bundles it),
/// with their variable part starting here. Nothing past it in the fixed part is read.
const FIXED_71: usize = 86;
/// OptionFlags2: integrated (Windows) security.
const INT_SECURITY: u8 = 0x80;
/// OptionFlags3: change password.
const CHANGE_PASSWORD: u8 = 0x01;
/// OptionFlags3: FeatureExt present.
const EXTENSION: u8 = 0x10;

pub use super::fedauth::FEATURE_FEDAUTH;
const FEATURE_TERMINATOR: u8 = 0xFF;

/// Characters at most in a name field; passwords are capped by LOGIN7 itself at 128.
const MAX_NAME: usize = 256;
const MAX_PASSWORD: usize = 128;
/// Bytes at most in a FEDAUTH token (an Entra token is a few KiB).
const MAX_TOKEN: usize = super::fedauth::MAX_TOKEN_BYTES;
/// Features at most.
const MAX_FEATURES: usize = 32;

/// A LOGIN7, as the gateway reads a client's and writes its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Login7 {
    pub tds_version: u32,
    pub packet_size: u32,
    pub client_prog_ver: u32,
    pub client_pid: u32,
    pub connection_id: u32,
    pub option_flags1: u8,
    pub option_flags2: u8,
    pub type_flags: u8,
    pub option_flags3: u8,
    pub client_time_zone: i32,
    pub client_lcid: u32,
    pub host_name: String,
    pub user_name: String,
    pub password: String,
    pub app_name: String,
    pub server_name: String,
    /// The client library's name (CltIntName).
    pub library: String,
    pub language: String,
    pub database: String,
    pub client_id: [u8; 6],
    /// The FEDAUTH security token, when the client sent one.
    pub token: Option<String>,
    /// Other features the client asked for, raw (never passed to the target).
    pub features: Vec<(u8, Vec<u8>)>,
    /// Whether the client asked for integrated (Kerberos/NTLM) security.
    pub sspi: bool,
}

impl Login7 {
    pub fn parse(p: &[u8]) -> Result<Login7> {
        if p.len() < FIXED_71 {
            return Err(CodecError::Truncated("LOGIN7"));
        }
        let u32_at = |i: usize| u32::from_le_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
        let u16_at = |i: usize| usize::from(u16::from_le_bytes([p[i], p[i + 1]]));
        let declared = u32_at(0) as usize;
        if declared > p.len() {
            return Err(CodecError::Truncated("LOGIN7 length"));
        }
        let field = |at: usize, max: usize, what: &'static str| -> Result<String> {
            let (off, chars) = (u16_at(at), u16_at(at + 2));
            if chars > max {
                return Err(CodecError::TooLong {
                    what,
                    len: chars,
                    max,
                });
            }
            if chars == 0 {
                return Ok(String::new());
            }
            if off < FIXED_71 {
                return Err(CodecError::Invalid(format!(
                    "{what}: offset inside the fixed part"
                )));
            }
            let raw = p
                .get(off..off + chars * 2)
                .ok_or(CodecError::Truncated(what))?;
            text::decode(raw, what)
        };
        let option_flags2 = p[25];
        let option_flags3 = p[27];
        let raw_password = {
            let (off, chars) = (u16_at(44), u16_at(46));
            if chars > MAX_PASSWORD {
                return Err(CodecError::TooLong {
                    what: "LOGIN7 password",
                    len: chars,
                    max: MAX_PASSWORD,
                });
            }
            if chars > 0 && off < FIXED_71 {
                return Err(CodecError::Invalid("LOGIN7 password offset".into()));
            }
            let raw = p
                .get(off..off + chars * 2)
                .ok_or(CodecError::Truncated("LOGIN7 password"))?;
            let clear: Vec<u8> = raw.iter().map(|b| unscramble(*b)).collect();
            text::decode(&clear, "LOGIN7 password")?
        };
        let mut client_id = [0u8; 6];
        client_id.copy_from_slice(&p[72..78]);
        let mut out = Login7 {
            tds_version: u32_at(4),
            packet_size: u32_at(8),
            client_prog_ver: u32_at(12),
            client_pid: u32_at(16),
            connection_id: u32_at(20),
            option_flags1: p[24],
            option_flags2,
            type_flags: p[26],
            option_flags3,
            client_time_zone: u32_at(28) as i32,
            client_lcid: u32_at(32),
            host_name: field(36, MAX_NAME, "LOGIN7 host name")?,
            user_name: field(40, MAX_NAME, "LOGIN7 user name")?,
            password: raw_password,
            app_name: field(48, MAX_NAME, "LOGIN7 app name")?,
            server_name: field(52, MAX_NAME, "LOGIN7 server name")?,
            library: field(60, MAX_NAME, "LOGIN7 library name")?,
            language: field(64, MAX_NAME, "LOGIN7 language")?,
            database: field(68, MAX_NAME, "LOGIN7 database")?,
            client_id,
            token: None,
            features: Vec::new(),
            sspi: option_flags2 & INT_SECURITY != 0 || u16_at(80) != 0,
        };
        if option_flags3 & EXTENSION != 0 {
            let (ib, cb) = (u16_at(56), u16_at(58));
            if cb < 4 {
                return Err(CodecError::Invalid("LOGIN7 extension pointer".into()));
            }
            let ptr = p
                .get(ib..ib + 4)
                .ok_or(CodecError::Truncated("LOGIN7 extension pointer"))?;
            let at = u32::from_le_bytes([ptr[0], ptr[1], ptr[2], ptr[3]]) as usize;
            out.parse_features(
                p.get(at..)
                    .ok_or(CodecError::Truncated("LOGIN7 FeatureExt"))?,
            )?;
        }
        Ok(out)
    }

    fn parse_features(&mut self, mut b: &[u8]) -> Result<()> {
        for _ in 0..=MAX_FEATURES {
            let id = *b
                .first()
                .ok_or(CodecError::Truncated("LOGIN7 FeatureExt"))?;
            if id == FEATURE_TERMINATOR {
                return Ok(());
            }
            let len = b
                .get(1..5)
                .map(|l| u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize)
                .ok_or(CodecError::Truncated("LOGIN7 feature length"))?;
            if len > MAX_TOKEN + 64 {
                return Err(CodecError::TooLong {
                    what: "LOGIN7 feature",
                    len,
                    max: MAX_TOKEN + 64,
                });
            }
            let data = b
                .get(5..5 + len)
                .ok_or(CodecError::Truncated("LOGIN7 feature data"))?;
            let twice = self.features.iter().any(|(f, _)| *f == id)
                || (id == FEATURE_FEDAUTH && self.token.is_some());
            if twice {
                return Err(CodecError::Invalid(format!(
                    "LOGIN7 feature {id:#04x} appears twice"
                )));
            }
            if id == FEATURE_FEDAUTH {
                self.token = Some(fedauth_token(data)?);
            } else {
                self.features.push((id, data.to_vec()));
            }
            b = &b[5 + len..];
        }
        Err(CodecError::TooLong {
            what: "LOGIN7 features",
            len: MAX_FEATURES + 1,
            max: MAX_FEATURES,
        })
    }

    /// Whether the client sent a FeatureExt block (and so expects a FEATUREEXTACK).
    pub fn has_features(&self) -> bool {
        self.option_flags3 & EXTENSION != 0
    }

    /// This LOGIN7's payload: names and password as given, no features, no SSPI and no
    /// password change (what the gateway sends a target).
    /// This login on the wire, without features: the credential is the user name and
    /// password (a token or feature the client sent is never passed on).
    pub fn encode(&self) -> Result<Vec<u8>> {
        self.encode_with(None)
    }

    /// This login on the wire with a FEDAUTH feature carrying `token` (the SECURITYTOKEN
    /// library): `echo` repeats the target's PRELOGIN FEDAUTHREQUIRED, `nonce` its PRELOGIN
    /// nonce. The user name and password should be empty.
    pub fn encode_with_token(
        &self,
        token: &str,
        echo: bool,
        nonce: Option<&[u8; 32]>,
    ) -> Result<Vec<u8>> {
        let fedauth = FedAuth {
            echo,
            library: FedAuthLibrary::SecurityToken {
                token: token.to_string(),
                nonce: nonce.copied(),
            },
        };
        let mut data = bytes::BytesMut::new();
        fedauth.encode_feature(&mut data)?;
        let mut ext = Vec::with_capacity(6 + data.len());
        ext.push(FEATURE_FEDAUTH);
        ext.extend_from_slice(&(data.len() as u32).to_le_bytes());
        ext.extend_from_slice(&data);
        ext.push(FEATURE_TERMINATOR);
        self.encode_with(Some(&ext))
    }

    /// The wire form, with `ext` (a FeatureExt block, terminator included) if given.
    fn encode_with(&self, ext: Option<&[u8]>) -> Result<Vec<u8>> {
        let mut strings: Vec<(usize, Vec<u8>)> = Vec::with_capacity(9);
        for (s, what, max) in [
            (&self.host_name, "host name", MAX_NAME),
            (&self.user_name, "user name", MAX_NAME),
            (&self.password, "password", MAX_PASSWORD),
            (&self.app_name, "app name", MAX_NAME),
            (&self.server_name, "server name", MAX_NAME),
            (&self.library, "library name", MAX_NAME),
            (&self.language, "language", MAX_NAME),
            (&self.database, "database", MAX_NAME),
        ] {
            let n = text::units(s);
            if n > max {
                return Err(CodecError::TooLong { what, len: n, max });
            }
            strings.push((n, text::encode(s)));
        }
        if let Some(pw) = strings.get_mut(2) {
            pw.1 = pw.1.iter().map(|b| scramble(*b)).collect();
        }
        let mut var = Vec::with_capacity(512);
        let mut table = [0u8; 58];
        let mut place = |slot: usize, chars: usize, bytes: &[u8], var: &mut Vec<u8>| {
            let off = FIXED + var.len();
            table[slot..slot + 2].copy_from_slice(&(off as u16).to_le_bytes());
            table[slot + 2..slot + 4].copy_from_slice(&(chars as u16).to_le_bytes());
            var.extend_from_slice(bytes);
        };
        // Table slots, relative to offset 36.
        for (i, slot) in [0usize, 4, 8, 12, 16].into_iter().enumerate() {
            let (n, b) = &strings[i];
            place(slot, *n, b, &mut var);
        }
        // Extension: a 4-byte offset of the FeatureExt block, which goes last.
        let ext_pointer = var.len();
        match ext {
            Some(_) => place(20, 4, &[0; 4], &mut var),
            None => place(20, 0, &[], &mut var),
        }
        for (i, slot) in [5usize, 6, 7].into_iter().zip([24usize, 28, 32]) {
            let (n, b) = &strings[i];
            place(slot, *n, b, &mut var);
        }
        // SSPI, AtchDBFile, ChangePassword: empty; cbSSPILong 0.
        place(42, 0, &[], &mut var);
        place(46, 0, &[], &mut var);
        place(50, 0, &[], &mut var);
        table[36..42].copy_from_slice(&self.client_id);
        if let Some(ext) = ext {
            let at = ((FIXED + var.len()) as u32).to_le_bytes();
            var[ext_pointer..ext_pointer + 4].copy_from_slice(&at);
            var.extend_from_slice(ext);
        }
        let total = FIXED + var.len();
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&(total as u32).to_le_bytes());
        out.extend_from_slice(&self.tds_version.to_le_bytes());
        out.extend_from_slice(&self.packet_size.to_le_bytes());
        out.extend_from_slice(&self.client_prog_ver.to_le_bytes());
        out.extend_from_slice(&self.client_pid.to_le_bytes());
        out.extend_from_slice(&self.connection_id.to_le_bytes());
        out.push(self.option_flags1);
        out.push(self.option_flags2 & !INT_SECURITY);
        out.push(self.type_flags);
        let extension = if ext.is_some() { EXTENSION } else { 0 };
        out.push(self.option_flags3 & !(EXTENSION | CHANGE_PASSWORD) | extension);
        out.extend_from_slice(&self.client_time_zone.to_le_bytes());
        out.extend_from_slice(&self.client_lcid.to_le_bytes());
        out.extend_from_slice(&table);
        debug_assert_eq!(out.len(), FIXED);
        out.extend_from_slice(&var);
        Ok(out)
    }
}

/// The token of a FEDAUTH feature using the security-token library. The ADAL/MSAL flavour
/// (the driver fetches a token after LOGIN7, told where by the server) is refused.
fn fedauth_token(data: &[u8]) -> Result<String> {
    match FedAuth::parse_feature(data)?.library {
        FedAuthLibrary::SecurityToken { token, .. } => Ok(token),
        FedAuthLibrary::Msal { workflow } => Err(CodecError::Invalid(format!(
            "FEDAUTH through ADAL/MSAL (workflow {workflow:#04x}: the driver fetches its own \
             token after LOGIN7) is not supported; pass the access token itself"
        ))),
    }
}

/// LOGIN7's password obfuscation: swap nibbles, then XOR 0xA5.
fn scramble(b: u8) -> u8 {
    b.rotate_left(4) ^ 0xA5
}

fn unscramble(b: u8) -> u8 {
    (b ^ 0xA5).rotate_left(4)
}

#[cfg(test)]
#[path = "login7_tests.rs"]
mod tests;
