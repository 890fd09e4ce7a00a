//! Borrowed views of client-to-server message bodies (`Frame::body()` of a frontend frame).
//!
//! Each decoder reads the whole body and refuses trailing bytes, so what the gateway inspects
//! is exactly what the server will execute.

use super::CodecError;
use super::reader::Reader;

/// Simple query (`'Q'`): the SQL text.
pub fn parse_query(body: &[u8]) -> Result<&str, CodecError> {
    let mut r = Reader::new(body);
    let query = r.cstr()?;
    r.finish()?;
    Ok(query)
}

/// Parse (`'P'`): prepare a named or unnamed statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parse<'a> {
    /// Statement name; empty for the unnamed statement.
    pub name: &'a str,
    /// SQL text.
    pub query: &'a str,
    /// Parameter type OIDs the client fixed in advance (0 = let the server infer).
    pub param_types: Vec<u32>,
}

/// Decodes a Parse body.
pub fn parse_parse(body: &[u8]) -> Result<Parse<'_>, CodecError> {
    let mut r = Reader::new(body);
    let name = r.cstr()?;
    let query = r.cstr()?;
    let count = usize::from(r.u16()?);
    let mut param_types = r.vec_for(count, 4)?;
    for _ in 0..count {
        param_types.push(r.u32()?);
    }
    r.finish()?;
    Ok(Parse {
        name,
        query,
        param_types,
    })
}

/// Bind (`'B'`): bind parameter values to a prepared statement, creating a portal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind<'a> {
    /// Destination portal; empty for the unnamed portal.
    pub portal: &'a str,
    /// Source statement; empty for the unnamed statement.
    pub statement: &'a str,
    /// Parameter format codes: none (all text), one (for all), or one per parameter.
    pub param_formats: Vec<i16>,
    /// Parameter values; `None` is SQL NULL.
    pub params: Vec<Option<&'a [u8]>>,
    /// Result column format codes, with the same none/one/each convention.
    pub result_formats: Vec<i16>,
}

/// Decodes a Bind body.
pub fn parse_bind(body: &[u8]) -> Result<Bind<'_>, CodecError> {
    let mut r = Reader::new(body);
    let portal = r.cstr()?;
    let statement = r.cstr()?;
    let param_formats = formats(&mut r)?;
    let count = usize::from(r.u16()?);
    let mut params = r.vec_for(count, 4)?;
    for _ in 0..count {
        params.push(r.nullable_bytes()?);
    }
    let result_formats = formats(&mut r)?;
    r.finish()?;
    // The server refuses this too; refusing it here means a parameter is never read with a
    // different format than the one the server will use.
    if param_formats.len() > 1 && param_formats.len() != params.len() {
        return Err(CodecError::Malformed(
            "parameter format count does not match parameters",
        ));
    }
    Ok(Bind {
        portal,
        statement,
        param_formats,
        params,
        result_formats,
    })
}

fn formats(r: &mut Reader<'_>) -> Result<Vec<i16>, CodecError> {
    let count = usize::from(r.u16()?);
    let mut out = r.vec_for(count, 2)?;
    for _ in 0..count {
        out.push(r.i16()?);
    }
    Ok(out)
}

/// Describe (`'D'`): `(b'S', statement)` or `(b'P', portal)`.
pub fn parse_describe(body: &[u8]) -> Result<(u8, &str), CodecError> {
    target(body)
}

/// Close (`'C'`): `(b'S', statement)` or `(b'P', portal)`.
pub fn parse_close(body: &[u8]) -> Result<(u8, &str), CodecError> {
    target(body)
}

fn target(body: &[u8]) -> Result<(u8, &str), CodecError> {
    let mut r = Reader::new(body);
    let kind = r.u8()?;
    if kind != b'S' && kind != b'P' {
        return Err(CodecError::Malformed(
            "target is neither statement nor portal",
        ));
    }
    let name = r.cstr()?;
    r.finish()?;
    Ok((kind, name))
}

/// Execute (`'E'`): portal name and row limit (0 or negative means no limit).
pub fn parse_execute(body: &[u8]) -> Result<(&str, i32), CodecError> {
    let mut r = Reader::new(body);
    let portal = r.cstr()?;
    let max_rows = r.i32()?;
    r.finish()?;
    Ok((portal, max_rows))
}

/// Cleartext PasswordMessage (`'p'` after an AuthenticationCleartextPassword request).
pub fn parse_password(body: &[u8]) -> Result<&str, CodecError> {
    let mut r = Reader::new(body);
    let password = r.cstr()?;
    r.finish()?;
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query() {
        assert_eq!(parse_query(b"select 1\0").unwrap(), "select 1");
        assert_eq!(parse_query(b"\0").unwrap(), "");
        for bad in [&b""[..], b"select 1", b"select 1\0\0", b"a\0b\0", b"\xc3\0"] {
            assert!(parse_query(bad).is_err(), "{bad:?}");
        }
    }

    fn parse_body(types: &[u32]) -> Vec<u8> {
        let mut b = b"s1\0select $1\0".to_vec();
        b.extend_from_slice(&u16::try_from(types.len()).unwrap().to_be_bytes());
        for t in types {
            b.extend_from_slice(&t.to_be_bytes());
        }
        b
    }

    #[test]
    fn parse() {
        let body = parse_body(&[23, 0]);
        let p = parse_parse(&body).unwrap();
        assert_eq!(
            p,
            Parse {
                name: "s1",
                query: "select $1",
                param_types: vec![23, 0]
            }
        );
        let body = parse_body(&[23, 25]);
        assert!(parse_parse(&body).is_ok());
        for cut in 0..body.len() {
            assert!(parse_parse(&body[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = body.clone();
        long.push(0);
        assert!(parse_parse(&long).is_err());
        // A count far larger than the body is refused without allocating for it.
        let mut forged = b"\0\0".to_vec();
        forged.extend_from_slice(&u16::MAX.to_be_bytes());
        assert!(parse_parse(&forged).is_err());
    }

    fn bind_body(formats: &[i16], params: &[Option<&[u8]>], results: &[i16]) -> Vec<u8> {
        let mut b = b"p\0s\0".to_vec();
        b.extend_from_slice(&u16::try_from(formats.len()).unwrap().to_be_bytes());
        for f in formats {
            b.extend_from_slice(&f.to_be_bytes());
        }
        b.extend_from_slice(&u16::try_from(params.len()).unwrap().to_be_bytes());
        for p in params {
            match p {
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    b.extend_from_slice(&i32::try_from(v.len()).unwrap().to_be_bytes());
                    b.extend_from_slice(v);
                }
            }
        }
        b.extend_from_slice(&u16::try_from(results.len()).unwrap().to_be_bytes());
        for f in results {
            b.extend_from_slice(&f.to_be_bytes());
        }
        b
    }

    #[test]
    fn bind() {
        let body = bind_body(&[1], &[Some(b"\0\0\0\x05"), None, Some(b"")], &[0, 1]);
        let b = parse_bind(&body).unwrap();
        assert_eq!(b.portal, "p");
        assert_eq!(b.statement, "s");
        assert_eq!(b.param_formats, vec![1]);
        assert_eq!(
            b.params,
            vec![Some(&b"\0\0\0\x05"[..]), None, Some(&b""[..])]
        );
        assert_eq!(b.result_formats, vec![0, 1]);
        for cut in 0..body.len() {
            assert!(parse_bind(&body[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = body.clone();
        long.push(0);
        assert!(parse_bind(&long).is_err());
    }

    #[test]
    fn bind_rejects_bad_lengths_and_format_counts() {
        // Value length -2 is neither NULL nor a length.
        let mut body = b"\0\0\0\0\0\x01".to_vec();
        body.extend_from_slice(&(-2i32).to_be_bytes());
        body.extend_from_slice(&[0, 0]);
        assert!(parse_bind(&body).is_err());
        // Value length past the end of the body.
        let mut body = b"\0\0\0\0\0\x01".to_vec();
        body.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(parse_bind(&body).is_err());
        // Two formats for three parameters.
        let body = bind_body(&[0, 1], &[None, None, None], &[]);
        assert!(parse_bind(&body).is_err());
        // One format for all, or one each, is fine.
        assert!(parse_bind(&bind_body(&[1], &[None, None], &[])).is_ok());
        assert!(parse_bind(&bind_body(&[1, 0], &[None, None], &[])).is_ok());
    }

    #[test]
    fn describe_close_execute_password() {
        assert_eq!(parse_describe(b"Sstmt\0").unwrap(), (b'S', "stmt"));
        assert_eq!(parse_describe(b"P\0").unwrap(), (b'P', ""));
        assert_eq!(parse_close(b"Pportal\0").unwrap(), (b'P', "portal"));
        for bad in [&b""[..], b"S", b"Xname\0", b"Sname", b"Sname\0x"] {
            assert!(parse_describe(bad).is_err(), "{bad:?}");
            assert!(parse_close(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_execute(b"\0\0\0\0\x0a").unwrap(), ("", 10));
        assert_eq!(parse_execute(b"p\0\xff\xff\xff\xff").unwrap(), ("p", -1));
        for bad in [&b""[..], b"p\0", b"p\0\0\0\0", b"p\0\0\0\0\0\0", b"p"] {
            assert!(parse_execute(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_password(b"tok.en\0").unwrap(), "tok.en");
        for bad in [&b""[..], b"pw", b"pw\0x", b"\xff\0"] {
            assert!(parse_password(bad).is_err(), "{bad:?}");
        }
    }
}
