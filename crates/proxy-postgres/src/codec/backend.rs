//! Borrowed views of server-to-client message bodies (`Frame::body()` of a backend frame).

use super::CodecError;
use super::reader::Reader;
use super::startup::{MAX_CANCEL_KEY, MIN_CANCEL_KEY};

pub use super::rows::{FieldDescription, parse_data_row, parse_row_description};

/// An Authentication message (`'R'`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthRequest<'a> {
    /// AuthenticationOk (0).
    Ok,
    /// AuthenticationCleartextPassword (3).
    CleartextPassword,
    /// AuthenticationMD5Password (5) with its salt.
    Md5Password {
        /// Salt to hash the password with.
        salt: [u8; 4],
    },
    /// AuthenticationSASL (10): mechanisms in the server's order of preference.
    Sasl {
        /// Mechanism names, e.g. `SCRAM-SHA-256`.
        mechanisms: Vec<&'a str>,
    },
    /// AuthenticationSASLContinue (11): server challenge.
    SaslContinue(&'a [u8]),
    /// AuthenticationSASLFinal (12): server signature.
    SaslFinal(&'a [u8]),
    /// Any other method (Kerberos, GSS, SSPI, ...), which the gateway does not speak.
    Other(i32),
}

/// Decodes an Authentication body.
pub fn parse_auth_request(body: &[u8]) -> Result<AuthRequest<'_>, CodecError> {
    let mut r = Reader::new(body);
    let request = match r.i32()? {
        0 => AuthRequest::Ok,
        3 => AuthRequest::CleartextPassword,
        5 => AuthRequest::Md5Password { salt: r.array()? },
        10 => {
            let mut mechanisms = Vec::new();
            loop {
                let name = r.cstr()?;
                if name.is_empty() {
                    break;
                }
                mechanisms.push(name);
            }
            AuthRequest::Sasl { mechanisms }
        }
        11 => AuthRequest::SaslContinue(r.rest()),
        12 => AuthRequest::SaslFinal(r.rest()),
        // The body layout of other methods is theirs; the caller only needs to refuse them.
        other => {
            r.rest();
            AuthRequest::Other(other)
        }
    };
    r.finish()?;
    Ok(request)
}

/// ParameterStatus (`'S'`): name and value.
pub fn parse_parameter_status(body: &[u8]) -> Result<(&str, &str), CodecError> {
    let mut r = Reader::new(body);
    let name = r.cstr()?;
    let value = r.cstr()?;
    r.finish()?;
    Ok((name, value))
}

/// BackendKeyData (`'K'`): process id and cancel key (4 bytes in 3.0, up to 256 in 3.2).
pub fn parse_backend_key_data(body: &[u8]) -> Result<(i32, &[u8]), CodecError> {
    let mut r = Reader::new(body);
    let pid = r.i32()?;
    let key = r.rest();
    if !(MIN_CANCEL_KEY..=MAX_CANCEL_KEY).contains(&key.len()) {
        return Err(CodecError::Malformed("cancel key length out of range"));
    }
    Ok((pid, key))
}

/// ReadyForQuery (`'Z'`): transaction status `b'I'` (idle), `b'T'` (in a transaction) or
/// `b'E'` (in a failed transaction).
pub fn parse_ready_for_query(body: &[u8]) -> Result<u8, CodecError> {
    let mut r = Reader::new(body);
    let status = r.u8()?;
    r.finish()?;
    match status {
        b'I' | b'T' | b'E' => Ok(status),
        _ => Err(CodecError::Malformed("unknown transaction status")),
    }
}

/// CommandComplete (`'C'`): the command tag, e.g. `INSERT 0 1`.
pub fn parse_command_complete(body: &[u8]) -> Result<&str, CodecError> {
    let mut r = Reader::new(body);
    let tag = r.cstr()?;
    r.finish()?;
    Ok(tag)
}

/// Row count from a CommandComplete tag (`SELECT 5`, `INSERT 0 1`, `UPDATE 3`, `COPY 10`), if
/// the tag carries one.
pub fn rows_from_tag(tag: &str) -> Option<u64> {
    let mut words = tag.split(' ');
    let count = match words.next()? {
        // INSERT carries the (always 0) oid before the count.
        "INSERT" => words.nth(1)?,
        "SELECT" | "UPDATE" | "DELETE" | "MERGE" | "FETCH" | "MOVE" | "COPY" => words.next()?,
        _ => return None,
    };
    if words.next().is_some() || count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    count.parse().ok()
}

/// Fields of an ErrorResponse (`'E'`) or NoticeResponse (`'N'`).
///
/// Severity, code and message are always sent by PostgreSQL and are required here; the rest
/// are optional. Unknown field types are ignored, as the protocol asks; a repeated field keeps
/// its last value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorFields<'a> {
    /// `S`: severity, possibly localized (ERROR, FATAL, PANIC, WARNING, NOTICE, ...).
    pub severity: &'a str,
    /// `V`: severity, never localized.
    pub severity_nonlocalized: Option<&'a str>,
    /// `C`: SQLSTATE code.
    pub code: &'a str,
    /// `M`: primary message.
    pub message: &'a str,
    /// `D`: detail.
    pub detail: Option<&'a str>,
    /// `H`: hint.
    pub hint: Option<&'a str>,
    /// `P`: cursor position in the query, as decimal text.
    pub position: Option<&'a str>,
    /// `p`: position in an internally generated query.
    pub internal_position: Option<&'a str>,
    /// `q`: the internally generated query.
    pub internal_query: Option<&'a str>,
    /// `W`: context (call stack).
    pub where_: Option<&'a str>,
    /// `s`: schema name.
    pub schema: Option<&'a str>,
    /// `t`: table name.
    pub table: Option<&'a str>,
    /// `c`: column name.
    pub column: Option<&'a str>,
    /// `d`: data type name.
    pub data_type: Option<&'a str>,
    /// `n`: constraint name.
    pub constraint: Option<&'a str>,
    /// `F`: server source file.
    pub file: Option<&'a str>,
    /// `L`: server source line.
    pub line: Option<&'a str>,
    /// `R`: server source routine.
    pub routine: Option<&'a str>,
}

/// Decodes an ErrorResponse or NoticeResponse body.
pub fn parse_error_fields(body: &[u8]) -> Result<ErrorFields<'_>, CodecError> {
    let mut r = Reader::new(body);
    let mut f = ErrorFields::default();
    let (mut severity, mut code, mut message) = (None, None, None);
    loop {
        let kind = r.u8()?;
        if kind == 0 {
            break;
        }
        let value = r.cstr()?;
        match kind {
            b'S' => severity = Some(value),
            b'V' => f.severity_nonlocalized = Some(value),
            b'C' => code = Some(value),
            b'M' => message = Some(value),
            b'D' => f.detail = Some(value),
            b'H' => f.hint = Some(value),
            b'P' => f.position = Some(value),
            b'p' => f.internal_position = Some(value),
            b'q' => f.internal_query = Some(value),
            b'W' => f.where_ = Some(value),
            b's' => f.schema = Some(value),
            b't' => f.table = Some(value),
            b'c' => f.column = Some(value),
            b'd' => f.data_type = Some(value),
            b'n' => f.constraint = Some(value),
            b'F' => f.file = Some(value),
            b'L' => f.line = Some(value),
            b'R' => f.routine = Some(value),
            _ => {}
        }
    }
    r.finish()?;
    match (severity, code, message) {
        (Some(s), Some(c), Some(m)) => {
            f.severity = s;
            f.code = c;
            f.message = m;
            Ok(f)
        }
        _ => Err(CodecError::Malformed(
            "error fields lack severity, code or message",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(code: i32, rest: &[u8]) -> Vec<u8> {
        let mut v = code.to_be_bytes().to_vec();
        v.extend_from_slice(rest);
        v
    }

    #[test]
    fn auth_requests() {
        assert_eq!(parse_auth_request(&auth(0, b"")).unwrap(), AuthRequest::Ok);
        assert_eq!(
            parse_auth_request(&auth(3, b"")).unwrap(),
            AuthRequest::CleartextPassword
        );
        assert_eq!(
            parse_auth_request(&auth(5, b"salt")).unwrap(),
            AuthRequest::Md5Password { salt: *b"salt" }
        );
        assert_eq!(
            parse_auth_request(&auth(10, b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0")).unwrap(),
            AuthRequest::Sasl {
                mechanisms: vec!["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]
            }
        );
        assert_eq!(
            parse_auth_request(&auth(11, b"r=abc,s=x,i=4096")).unwrap(),
            AuthRequest::SaslContinue(b"r=abc,s=x,i=4096")
        );
        assert_eq!(
            parse_auth_request(&auth(12, b"v=sig")).unwrap(),
            AuthRequest::SaslFinal(b"v=sig")
        );
        assert_eq!(
            parse_auth_request(&auth(7, b"")).unwrap(),
            AuthRequest::Other(7)
        );
        assert_eq!(
            parse_auth_request(&auth(8, b"gss")).unwrap(),
            AuthRequest::Other(8)
        );
        for bad in [
            &b""[..],
            b"\0\0\0",
            &auth(0, b"x"),
            &auth(3, b"x"),
            &auth(5, b"sal"),
            &auth(5, b"salts"),
            &auth(10, b"SCRAM-SHA-256\0"),
            &auth(10, b"SCRAM-SHA-256\0\0x"),
            &auth(10, b""),
        ] {
            assert!(parse_auth_request(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn status_key_ready_complete() {
        assert_eq!(
            parse_parameter_status(b"TimeZone\0UTC\0").unwrap(),
            ("TimeZone", "UTC")
        );
        for bad in [&b""[..], b"a\0", b"a\0b", b"a\0b\0c"] {
            assert!(parse_parameter_status(bad).is_err(), "{bad:?}");
        }

        assert_eq!(
            parse_backend_key_data(b"\0\0\0\x07abcd").unwrap(),
            (7, &b"abcd"[..])
        );
        let mut long = vec![0, 0, 0, 1];
        long.extend([5; 32]);
        assert_eq!(parse_backend_key_data(&long).unwrap(), (1, &[5u8; 32][..]));
        long.extend([5; 256]);
        for bad in [&b""[..], b"\0\0\0\x07", b"\0\0\0\x07abc", &long] {
            assert!(parse_backend_key_data(bad).is_err(), "{bad:?}");
        }

        for s in [b'I', b'T', b'E'] {
            assert_eq!(parse_ready_for_query(&[s]).unwrap(), s);
        }
        for bad in [&b""[..], b"X", b"II"] {
            assert!(parse_ready_for_query(bad).is_err(), "{bad:?}");
        }

        assert_eq!(
            parse_command_complete(b"INSERT 0 1\0").unwrap(),
            "INSERT 0 1"
        );
        for bad in [&b""[..], b"SELECT 1", b"SELECT 1\0\0"] {
            assert!(parse_command_complete(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn row_counts_from_tags() {
        assert_eq!(rows_from_tag("SELECT 5"), Some(5));
        assert_eq!(rows_from_tag("INSERT 0 1"), Some(1));
        assert_eq!(rows_from_tag("UPDATE 3"), Some(3));
        assert_eq!(rows_from_tag("DELETE 0"), Some(0));
        assert_eq!(rows_from_tag("MERGE 2"), Some(2));
        assert_eq!(rows_from_tag("COPY 10"), Some(10));
        assert_eq!(rows_from_tag("FETCH 18446744073709551615"), Some(u64::MAX));
        for none in [
            "",
            "BEGIN",
            "CREATE TABLE",
            "INSERT 1",
            "INSERT 0 1 2",
            "SELECT",
            "SELECT x",
            "SELECT +5",
            "SELECT 5 ",
            "SELECT -1",
            "UPDATE 18446744073709551616",
            "select 5",
        ] {
            assert_eq!(rows_from_tag(none), None, "{none:?}");
        }
    }

    #[test]
    fn error_fields() {
        let body = b"SERROR\0VERROR\0C42P01\0Mrelation \"x\" does not exist\0P15\0Fparse.c\0\
                     L1\0Rfn\0Zfuture field\0\0";
        let f = parse_error_fields(body).unwrap();
        assert_eq!(f.severity, "ERROR");
        assert_eq!(f.severity_nonlocalized, Some("ERROR"));
        assert_eq!(f.code, "42P01");
        assert_eq!(f.message, "relation \"x\" does not exist");
        assert_eq!(f.position, Some("15"));
        assert_eq!(f.file, Some("parse.c"));
        assert_eq!(f.detail, None);
        for cut in 0..body.len() {
            assert!(parse_error_fields(&body[..cut]).is_err(), "cut at {cut}");
        }
        for bad in [
            &b"\0"[..],
            b"SERROR\0C42P01\0\0",      // no message
            b"SERROR\0Mm\0\0",          // no code
            b"C1\0Mm\0\0",              // no severity
            b"SERROR\0C1\0Mm\0\0extra", // trailing bytes
        ] {
            assert!(parse_error_fields(bad).is_err(), "{bad:?}");
        }
    }
}
