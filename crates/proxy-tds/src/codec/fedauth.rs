//! Federated authentication (Entra ID): the FEDAUTH FeatureExt data of LOGIN7.
//!
//! FeatureData begins with an options byte: fFedAuthEcho in bit 0, bFedAuthLibrary in bits 1-7
//! (the specification's grammar lists them the other way round; clients and the mock server
//! put the echo bit lowest). SECURITYTOKEN (0x01) then carries the token as a 4-byte length
//! and UTF-16LE bytes, then the server's 32-byte nonce when PRELOGIN offered one. ADAL/MSAL
//! (0x02) carries one workflow byte; its token would follow in a FEDAUTH_TOKEN message after
//! a FEDAUTHINFO challenge, which the gateway does not send (it refuses such logins).

use bytes::{BufMut, BytesMut};

use super::cursor::{Cursor, bounded};
use super::text::{decode, encode};
use super::{CodecError, Result};

/// The FEDAUTH FeatureExt id.
pub const FEATURE_FEDAUTH: u8 = 0x02;
/// Bound on an access token's UTF-16LE bytes (Entra tokens are a few KiB).
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;
/// bFedAuthLibrary: the client already holds a token.
pub const LIBRARY_SECURITY_TOKEN: u8 = 0x01;
/// bFedAuthLibrary: ADAL/MSAL, the token comes after a FEDAUTHINFO challenge.
pub const LIBRARY_MSAL: u8 = 0x02;

/// Which federated authentication library the client uses, with its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FedAuthLibrary {
    /// SECURITYTOKEN: the access token itself, and the echoed PRELOGIN nonce if any.
    SecurityToken {
        token: String,
        nonce: Option<[u8; 32]>,
    },
    /// ADAL/MSAL with its workflow byte (1 password, 2 integrated, 3 interactive/other).
    Msal { workflow: u8 },
}

/// The FEDAUTH feature of a LOGIN7.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FedAuth {
    /// fFedAuthEcho: the client echoes the server's FEDAUTHREQUIRED.
    pub echo: bool,
    pub library: FedAuthLibrary,
}

fn read_token(cur: &mut Cursor<'_>) -> Result<String> {
    let len = bounded(
        "FEDAUTH token",
        u64::from(cur.u32_le("FEDAUTH token length")?),
        MAX_TOKEN_BYTES,
    )?;
    decode(cur.take(len, "FEDAUTH token")?, "FEDAUTH token")
}

fn read_nonce(cur: &mut Cursor<'_>, what: &'static str) -> Result<Option<[u8; 32]>> {
    match cur.remaining() {
        0 => Ok(None),
        32 => cur.array(what).map(Some),
        n => Err(CodecError::Invalid(format!(
            "{what}: {n} trailing bytes where a 32-byte nonce or nothing was expected"
        ))),
    }
}

fn put_token(out: &mut BytesMut, token: &str) -> Result<()> {
    let bytes = encode(token);
    if bytes.len() > MAX_TOKEN_BYTES {
        return Err(CodecError::TooLong {
            what: "FEDAUTH token",
            len: bytes.len(),
            max: MAX_TOKEN_BYTES,
        });
    }
    // Fits: at most MAX_TOKEN_BYTES.
    out.put_u32_le(bytes.len() as u32);
    out.put_slice(&bytes);
    Ok(())
}

impl FedAuth {
    /// A SECURITYTOKEN login with `token` and no nonce.
    pub fn security_token(token: impl Into<String>) -> Self {
        FedAuth {
            echo: false,
            library: FedAuthLibrary::SecurityToken {
                token: token.into(),
                nonce: None,
            },
        }
    }

    /// The access token, for SECURITYTOKEN.
    pub fn token(&self) -> Option<&str> {
        match &self.library {
            FedAuthLibrary::SecurityToken { token, .. } => Some(token),
            FedAuthLibrary::Msal { .. } => None,
        }
    }

    /// Parses FEDAUTH FeatureData. Libraries other than SECURITYTOKEN and MSAL are refused.
    pub fn parse_feature(data: &[u8]) -> Result<Self> {
        let mut cur = Cursor::new(data);
        let options = cur.u8("FEDAUTH options")?;
        let echo = options & 0x01 != 0;
        let library = match options >> 1 {
            LIBRARY_SECURITY_TOKEN => {
                let token = read_token(&mut cur)?;
                let nonce = read_nonce(&mut cur, "FEDAUTH feature")?;
                FedAuthLibrary::SecurityToken { token, nonce }
            }
            LIBRARY_MSAL => {
                let workflow = cur.u8("FEDAUTH workflow")?;
                if !cur.is_empty() {
                    return Err(CodecError::Invalid(
                        "FEDAUTH MSAL feature has trailing bytes".into(),
                    ));
                }
                FedAuthLibrary::Msal { workflow }
            }
            other => {
                return Err(CodecError::Invalid(format!(
                    "unsupported FEDAUTH library 0x{other:02X}"
                )));
            }
        };
        Ok(FedAuth { echo, library })
    }

    /// Appends the FeatureData (without the feature id and length).
    pub fn encode_feature(&self, out: &mut BytesMut) -> Result<()> {
        let echo = u8::from(self.echo);
        match &self.library {
            FedAuthLibrary::SecurityToken { token, nonce } => {
                out.put_u8((LIBRARY_SECURITY_TOKEN << 1) | echo);
                put_token(out, token)?;
                if let Some(n) = nonce {
                    out.put_slice(n);
                }
            }
            FedAuthLibrary::Msal { workflow } => {
                out.put_u8((LIBRARY_MSAL << 1) | echo);
                out.put_u8(*workflow);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_token_feature_with_nonce() {
        // Options 0x03: library 1, echo set; token "ab"; nonce.
        let mut data = vec![0x03, 4, 0, 0, 0, b'a', 0, b'b', 0];
        data.extend_from_slice(&[0x11; 32]);
        let f = FedAuth::parse_feature(&data).unwrap();
        assert!(f.echo);
        assert_eq!(f.token(), Some("ab"));
        assert!(matches!(
            f.library,
            FedAuthLibrary::SecurityToken { nonce: Some(n), .. } if n == [0x11; 32]
        ));
        let mut out = BytesMut::new();
        f.encode_feature(&mut out).unwrap();
        assert_eq!(&out[..], &data[..]);
    }

    #[test]
    fn msal_feature_reads_library_from_high_bits() {
        // 0x04 = library 2 (MSAL), echo 0; the mock reads it the same way.
        let f = FedAuth::parse_feature(&[0x04, 0x03]).unwrap();
        assert_eq!(f.library, FedAuthLibrary::Msal { workflow: 3 });
        assert!(!f.echo);
        assert_eq!(f.token(), None);
        let mut out = BytesMut::new();
        f.encode_feature(&mut out).unwrap();
        assert_eq!(&out[..], &[0x04, 0x03]);
        assert!(FedAuth::parse_feature(&[0x04, 0x03, 0x00]).is_err());
    }

    #[test]
    fn bad_feature_data_refused() {
        assert!(FedAuth::parse_feature(&[]).is_err());
        assert!(FedAuth::parse_feature(&[0x00]).is_err()); // LIVEID, obsolete
        assert!(FedAuth::parse_feature(&[0x02, 9, 0, 0, 0, b'a', 0]).is_err()); // short token
        assert!(FedAuth::parse_feature(&[0x02, 3, 0, 0, 0, b'a', 0, 0]).is_err()); // odd UTF-16
        assert!(FedAuth::parse_feature(&[0x02, 2, 0, 0, 0, b'a', 0, 1]).is_err()); // junk tail
        let huge = [0x02, 0xFF, 0xFF, 0xFF, 0x7F];
        assert!(matches!(
            FedAuth::parse_feature(&huge),
            Err(CodecError::TooLong {
                what: "FEDAUTH token",
                ..
            })
        ));
    }

    #[test]
    fn oversized_token_refused_on_encode() {
        let f = FedAuth::security_token("x".repeat(MAX_TOKEN_BYTES / 2 + 1));
        assert!(f.encode_feature(&mut BytesMut::new()).is_err());
    }
}
