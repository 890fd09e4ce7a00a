//! Encoders. Each appends one whole message to a `BytesMut`, so the relay can batch several
//! messages into one write.
//!
//! Strings are written NUL-terminated with any interior NUL bytes dropped: an embedded NUL
//! would end the field early on the peer's side and shift every following field, so text that
//! reached us from elsewhere (a deny reason, a parameter value) could otherwise forge protocol.

use bytes::{BufMut, BytesMut};

use super::CodecError;
use super::frontend::{Bind, Parse};
use super::startup::{CANCEL_REQUEST_CODE, PROTOCOL_3_0, SSL_REQUEST_CODE};
use super::tags::{backend as be, frontend as fe};

/// Writes a tagged message whose body `body` appends; the length is filled in afterwards.
fn tagged(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    untagged(buf, body);
}

/// Writes an Int32 length (counting itself) followed by what `body` appends.
fn untagged(buf: &mut BytesMut, body: impl FnOnce(&mut BytesMut)) {
    let start = buf.len();
    buf.put_u32(0);
    body(buf);
    // Our own messages never approach 4 GiB; saturating keeps this infallible without a panic.
    let len = u32::try_from(buf.len() - start).unwrap_or(u32::MAX);
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends `s` with interior NULs dropped, then the terminating NUL.
fn put_cstr(buf: &mut BytesMut, s: &[u8]) {
    for part in s.split(|&b| b == 0) {
        buf.extend_from_slice(part);
    }
    buf.put_u8(0);
}

/// Converts a count to the protocol's Int16 count, refusing what it cannot express.
fn count16(n: usize) -> Result<u16, CodecError> {
    u16::try_from(n).map_err(|_| CodecError::Malformed("more than 65535 items in one message"))
}

/// Checks that every value length fits the protocol's Int32 length.
fn check_values(values: &[Option<&[u8]>]) -> Result<u16, CodecError> {
    if values
        .iter()
        .flatten()
        .any(|v| i32::try_from(v.len()).is_err())
    {
        return Err(CodecError::Malformed("value longer than 2 GiB"));
    }
    count16(values.len())
}

/// Appends Int32-length-prefixed values, -1 for NULL. Lengths were checked by `check_values`.
fn put_values(buf: &mut BytesMut, values: &[Option<&[u8]>]) {
    for value in values {
        match value {
            None => buf.put_i32(-1),
            Some(v) => {
                buf.put_i32(i32::try_from(v.len()).unwrap_or(i32::MAX));
                buf.extend_from_slice(v);
            }
        }
    }
}

fn put_fields(buf: &mut BytesMut, fields: &[(u8, Option<&str>)]) {
    for &(kind, value) in fields {
        if let Some(value) = value {
            buf.put_u8(kind);
            put_cstr(buf, value.as_bytes());
        }
    }
    buf.put_u8(0);
}

// ---- backend (gateway acting as the server) ----

/// ErrorResponse with severity (`ERROR` or `FATAL`), SQLSTATE code, message, detail, hint.
pub fn put_error(
    buf: &mut BytesMut,
    severity: &str,
    code: &str,
    message: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) {
    tagged(buf, be::ERROR, |b| {
        put_fields(
            b,
            &[
                (b'S', Some(severity)),
                (b'V', Some(severity)),
                (b'C', Some(code)),
                (b'M', Some(message)),
                (b'D', detail),
                (b'H', hint),
            ],
        );
    });
}

/// NoticeResponse (e.g. severity `NOTICE`: "waiting for approval").
pub fn put_notice(
    buf: &mut BytesMut,
    severity: &str,
    code: &str,
    message: &str,
    detail: Option<&str>,
) {
    tagged(buf, be::NOTICE, |b| {
        put_fields(
            b,
            &[
                (b'S', Some(severity)),
                (b'V', Some(severity)),
                (b'C', Some(code)),
                (b'M', Some(message)),
                (b'D', detail),
            ],
        );
    });
}

/// AuthenticationOk.
pub fn put_auth_ok(buf: &mut BytesMut) {
    tagged(buf, be::AUTH, |b| b.put_i32(0));
}

/// AuthenticationCleartextPassword: ask the client for its password (the token).
pub fn put_auth_cleartext(buf: &mut BytesMut) {
    tagged(buf, be::AUTH, |b| b.put_i32(3));
}

/// ParameterStatus.
pub fn put_parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    tagged(buf, be::PARAMETER_STATUS, |b| {
        put_cstr(b, name.as_bytes());
        put_cstr(b, value.as_bytes());
    });
}

/// BackendKeyData with the process id and cancel key the client will present to cancel.
pub fn put_backend_key_data(buf: &mut BytesMut, pid: i32, key: &[u8]) {
    tagged(buf, be::BACKEND_KEY, |b| {
        b.put_i32(pid);
        b.extend_from_slice(key);
    });
}

/// ReadyForQuery with transaction status `b'I'`, `b'T'` or `b'E'`.
pub fn put_ready_for_query(buf: &mut BytesMut, status: u8) {
    tagged(buf, be::READY, |b| b.put_u8(status));
}

/// CommandComplete with its tag (`SELECT 1`, `BEGIN`, ...).
pub fn put_command_complete(buf: &mut BytesMut, tag: &str) {
    tagged(buf, be::COMMAND_COMPLETE, |b| put_cstr(b, tag.as_bytes()));
}

/// EmptyQueryResponse.
pub fn put_empty_query(buf: &mut BytesMut) {
    tagged(buf, be::EMPTY_QUERY, |_| {});
}

/// ParseComplete.
pub fn put_parse_complete(buf: &mut BytesMut) {
    tagged(buf, be::PARSE_COMPLETE, |_| {});
}

/// BindComplete.
pub fn put_bind_complete(buf: &mut BytesMut) {
    tagged(buf, be::BIND_COMPLETE, |_| {});
}

/// CloseComplete.
pub fn put_close_complete(buf: &mut BytesMut) {
    tagged(buf, be::CLOSE_COMPLETE, |_| {});
}

/// NoData.
pub fn put_no_data(buf: &mut BytesMut) {
    tagged(buf, be::NO_DATA, |_| {});
}

/// NegotiateProtocolVersion: the newest version (e.g. [`PROTOCOL_3_0`]) and the protocol
/// options (`_pq_.*`) the gateway does not support.
pub fn put_negotiate_protocol_version(buf: &mut BytesMut, version: u32, unsupported: &[&str]) {
    tagged(buf, be::NEGOTIATE_PROTOCOL_VERSION, |b| {
        b.put_u32(version);
        b.put_u32(u32::try_from(unsupported.len()).unwrap_or(u32::MAX));
        for option in unsupported {
            put_cstr(b, option.as_bytes());
        }
    });
}

/// DataRow, used when a masked row is rebuilt. Fails only past the protocol's limits.
pub fn put_data_row(buf: &mut BytesMut, values: &[Option<&[u8]>]) -> Result<(), CodecError> {
    let count = check_values(values)?;
    tagged(buf, be::DATA_ROW, |b| {
        b.put_u16(count);
        put_values(b, values);
    });
    Ok(())
}

// ---- frontend (gateway acting as the client towards the target) ----

/// StartupMessage for protocol 3.0 with the given parameters.
pub fn put_startup(buf: &mut BytesMut, params: &[(&str, &str)]) {
    untagged(buf, |b| {
        b.put_u32(PROTOCOL_3_0);
        for (name, value) in params {
            put_cstr(b, name.as_bytes());
            put_cstr(b, value.as_bytes());
        }
        b.put_u8(0);
    });
}

/// SSLRequest.
pub fn put_ssl_request(buf: &mut BytesMut) {
    untagged(buf, |b| b.put_u32(SSL_REQUEST_CODE));
}

/// CancelRequest with the pid and key the target gave in its BackendKeyData.
pub fn put_cancel_request(buf: &mut BytesMut, pid: i32, key: &[u8]) {
    untagged(buf, |b| {
        b.put_u32(CANCEL_REQUEST_CODE);
        b.put_i32(pid);
        b.extend_from_slice(key);
    });
}

/// PasswordMessage (cleartext password or MD5 hash text).
pub fn put_password(buf: &mut BytesMut, password: &[u8]) {
    tagged(buf, fe::PASSWORD, |b| put_cstr(b, password));
}

/// SASLInitialResponse: chosen mechanism and the client-first message.
pub fn put_sasl_initial(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    tagged(buf, fe::PASSWORD, |b| {
        put_cstr(b, mechanism.as_bytes());
        b.put_i32(i32::try_from(data.len()).unwrap_or(i32::MAX));
        b.extend_from_slice(data);
    });
}

/// SASLResponse: the client-final message.
pub fn put_sasl_response(buf: &mut BytesMut, data: &[u8]) {
    tagged(buf, fe::PASSWORD, |b| b.extend_from_slice(data));
}

/// Simple Query.
pub fn put_query(buf: &mut BytesMut, query: &str) {
    tagged(buf, fe::QUERY, |b| put_cstr(b, query.as_bytes()));
}

/// Parse. Fails only past the protocol's limits (more than 65535 parameter types).
pub fn put_parse(buf: &mut BytesMut, parse: &Parse<'_>) -> Result<(), CodecError> {
    let count = count16(parse.param_types.len())?;
    tagged(buf, fe::PARSE, |b| {
        put_cstr(b, parse.name.as_bytes());
        put_cstr(b, parse.query.as_bytes());
        b.put_u16(count);
        for &oid in &parse.param_types {
            b.put_u32(oid);
        }
    });
    Ok(())
}

/// Bind. Fails only past the protocol's limits (counts above 65535, values above 2 GiB).
pub fn put_bind(buf: &mut BytesMut, bind: &Bind<'_>) -> Result<(), CodecError> {
    let formats = count16(bind.param_formats.len())?;
    let params = check_values(&bind.params)?;
    let results = count16(bind.result_formats.len())?;
    tagged(buf, fe::BIND, |b| {
        put_cstr(b, bind.portal.as_bytes());
        put_cstr(b, bind.statement.as_bytes());
        b.put_u16(formats);
        for &f in &bind.param_formats {
            b.put_i16(f);
        }
        b.put_u16(params);
        put_values(b, &bind.params);
        b.put_u16(results);
        for &f in &bind.result_formats {
            b.put_i16(f);
        }
    });
    Ok(())
}

/// Describe a statement (`b'S'`) or portal (`b'P'`).
pub fn put_describe(buf: &mut BytesMut, kind: u8, name: &str) {
    tagged(buf, fe::DESCRIBE, |b| {
        b.put_u8(kind);
        put_cstr(b, name.as_bytes());
    });
}

/// Sync.
pub fn put_sync(buf: &mut BytesMut) {
    tagged(buf, fe::SYNC, |_| {});
}

/// Terminate.
pub fn put_terminate(buf: &mut BytesMut) {
    tagged(buf, fe::TERMINATE, |_| {});
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::message::{backend::Message, frontend as oracle};

    fn ours(f: impl FnOnce(&mut BytesMut)) -> BytesMut {
        let mut b = BytesMut::new();
        f(&mut b);
        b
    }

    fn theirs(f: impl FnOnce(&mut BytesMut)) -> BytesMut {
        let mut b = BytesMut::new();
        f(&mut b);
        b
    }

    #[test]
    fn frontend_bytes_match_the_reference_encoder() {
        let params = [
            ("user", "app"),
            ("database", "orders"),
            ("application_name", ""),
        ];
        assert_eq!(
            ours(|b| put_startup(b, &params)),
            theirs(|b| oracle::startup_message(params.iter().copied(), b).unwrap())
        );
        assert_eq!(
            ours(|b| put_query(b, "select 1")),
            theirs(|b| oracle::query("select 1", b).unwrap())
        );
        let parse = Parse {
            name: "s1",
            query: "select $1",
            param_types: vec![23, 0],
        };
        assert_eq!(
            ours(|b| put_parse(b, &parse).unwrap()),
            theirs(|b| oracle::parse("s1", "select $1", [23, 0], b).unwrap())
        );
        assert_eq!(
            ours(|b| put_password(b, b"secret")),
            theirs(|b| oracle::password_message(b"secret", b).unwrap())
        );
        assert_eq!(
            ours(|b| put_sasl_initial(b, "SCRAM-SHA-256", b"n,,n=,r=abc")),
            theirs(|b| oracle::sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=abc", b).unwrap())
        );
        assert_eq!(
            ours(|b| put_sasl_response(b, b"c=biws,r=abc,p=xyz")),
            theirs(|b| oracle::sasl_response(b"c=biws,r=abc,p=xyz", b).unwrap())
        );
        assert_eq!(ours(put_ssl_request), theirs(oracle::ssl_request));
        assert_eq!(
            ours(|b| put_cancel_request(b, 77, &0x0102_0304i32.to_be_bytes())),
            theirs(|b| oracle::cancel_request(77, 0x0102_0304, b))
        );
        assert_eq!(ours(put_sync), theirs(oracle::sync));
        assert_eq!(ours(put_terminate), theirs(oracle::terminate));
    }

    fn reference_parse(mut b: BytesMut) -> Message {
        let m = Message::parse(&mut b).unwrap().unwrap();
        assert!(b.is_empty(), "exactly one message");
        m
    }

    #[test]
    fn backend_messages_parse_with_the_reference_decoder() {
        assert!(matches!(
            reference_parse(ours(put_auth_ok)),
            Message::AuthenticationOk
        ));
        assert!(matches!(
            reference_parse(ours(put_auth_cleartext)),
            Message::AuthenticationCleartextPassword
        ));
        let Message::ParameterStatus(p) =
            reference_parse(ours(|b| put_parameter_status(b, "server_version", "15.4")))
        else {
            panic!("not ParameterStatus")
        };
        assert_eq!(
            (p.name().unwrap(), p.value().unwrap()),
            ("server_version", "15.4")
        );
        let Message::BackendKeyData(k) =
            reference_parse(ours(|b| put_backend_key_data(b, 9, &5i32.to_be_bytes())))
        else {
            panic!("not BackendKeyData")
        };
        assert_eq!((k.process_id(), k.secret_key()), (9, 5));
        let Message::ReadyForQuery(r) = reference_parse(ours(|b| put_ready_for_query(b, b'T')))
        else {
            panic!("not ReadyForQuery")
        };
        assert_eq!(r.status(), b'T');
        let Message::CommandComplete(c) =
            reference_parse(ours(|b| put_command_complete(b, "SELECT 3")))
        else {
            panic!("not CommandComplete")
        };
        assert_eq!(c.tag().unwrap(), "SELECT 3");
        assert!(matches!(
            reference_parse(ours(put_empty_query)),
            Message::EmptyQueryResponse
        ));
        assert!(matches!(
            reference_parse(ours(put_parse_complete)),
            Message::ParseComplete
        ));
        assert!(matches!(
            reference_parse(ours(put_bind_complete)),
            Message::BindComplete
        ));
        assert!(matches!(
            reference_parse(ours(put_close_complete)),
            Message::CloseComplete
        ));
        assert!(matches!(
            reference_parse(ours(put_no_data)),
            Message::NoData
        ));
        assert!(matches!(
            reference_parse(ours(|b| put_error(
                b, "ERROR", "42501", "denied", None, None
            ))),
            Message::ErrorResponse(_)
        ));
        assert!(matches!(
            reference_parse(ours(|b| put_notice(
                b,
                "NOTICE",
                "00000",
                "held",
                Some("id 7")
            ))),
            Message::NoticeResponse(_)
        ));
        let Message::DataRow(row) =
            reference_parse(ours(|b| put_data_row(b, &[Some(&b"1"[..]), None]).unwrap()))
        else {
            panic!("not DataRow")
        };
        assert_eq!(row.buffer(), b"\0\0\0\x011\xff\xff\xff\xff");
    }

    #[test]
    fn exact_bytes_of_fixed_messages() {
        assert_eq!(&ours(put_auth_ok)[..], b"R\0\0\0\x08\0\0\0\0");
        assert_eq!(&ours(put_auth_cleartext)[..], b"R\0\0\0\x08\0\0\0\x03");
        assert_eq!(
            &ours(put_ssl_request)[..],
            &[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]
        );
        assert_eq!(&ours(|b| put_ready_for_query(b, b'I'))[..], b"Z\0\0\0\x05I");
        assert_eq!(
            &ours(|b| put_negotiate_protocol_version(b, PROTOCOL_3_0, &["_pq_.x"]))[..],
            b"v\0\0\0\x13\0\x03\0\0\0\0\0\x01_pq_.x\0"
        );
    }

    #[test]
    fn interior_nul_cannot_forge_fields() {
        let b = ours(|b| put_error(b, "ERROR", "42501", "bad\0Mforged", None, None));
        let fields = super::super::parse_error_fields(&b[5..]).unwrap();
        assert_eq!(fields.message, "badMforged");
        let b = ours(|b| put_query(b, "select 1\0; drop table t"));
        assert_eq!(
            super::super::parse_query(&b[5..]).unwrap(),
            "select 1; drop table t"
        );
    }

    #[test]
    fn batched_messages_append() {
        let mut b = BytesMut::new();
        put_auth_ok(&mut b);
        put_parameter_status(&mut b, "a", "b");
        put_ready_for_query(&mut b, b'I');
        let mut tags = Vec::new();
        while let Some(f) = super::super::next_frame(&mut b, 1024).unwrap() {
            tags.push(f.tag);
        }
        assert_eq!(tags, b"RSZ");
    }

    #[test]
    fn counts_past_the_protocol_limit_are_refused() {
        let types = vec![0u32; 65_536];
        let parse = Parse {
            name: "",
            query: "",
            param_types: types,
        };
        let mut b = BytesMut::new();
        assert!(put_parse(&mut b, &parse).is_err());
        assert!(b.is_empty(), "nothing written on refusal");
        let values = vec![None; 65_536];
        assert!(put_data_row(&mut b, &values).is_err());
        assert!(b.is_empty());
    }
}
