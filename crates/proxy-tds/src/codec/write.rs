//! Tokens the gateway writes itself: to complete a client's login (LOGINACK, ENVCHANGE,
//! FEATUREEXTACK, DONE) and to refuse a request (ERROR then DONE with DONE_ERROR).
//! Every length is checked before anything is written, so a failed call leaves `out` untouched.

use bytes::{BufMut, BytesMut};

use super::CodecError;
use super::messages::{
    Done, EnvChange, FeatureAck, LoginAck, ServerMessage, done_status, env_type,
};
use super::tokenbuf::{put_ucs2, ucs2_units};

/// Which of the three DONE tokens to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DoneKind {
    Done,
    DoneProc,
    DoneInProc,
}

/// TDS 7.4, as LOGINACK carries it.
pub const TDS_7_4: u32 = 0x7400_0004;
/// SQL_TSQL, the LOGINACK interface.
pub const INTERFACE_TSQL: u8 = 1;

/// Longest message text the gateway writes itself, in characters (an ERROR token's body is
/// at most 64 KiB).
const MAX_GATEWAY_MESSAGE: usize = 4000;

impl ServerMessage {
    /// A message with state 1, line 1 and no server or procedure name.
    pub fn new(number: i32, class: u8, message: impl Into<String>) -> Self {
        Self {
            number,
            state: 1,
            class,
            message: message.into(),
            server: String::new(),
            procedure: String::new(),
            line: 1,
        }
    }

    /// A message of the gateway's own, named as from server `portcullis`; text past 4000
    /// characters is cut, so writing it cannot fail.
    pub fn from_gateway(number: i32, class: u8, message: &str) -> Self {
        let message = match message.char_indices().nth(MAX_GATEWAY_MESSAGE) {
            Some((at, _)) => &message[..at],
            None => message,
        };
        Self {
            server: "portcullis".into(),
            ..Self::new(number, class, message)
        }
    }
}

impl Done {
    /// A DONE with `status`, no current command and no row count.
    pub fn with_status(status: u16) -> Self {
        Self {
            status,
            cur_cmd: 0,
            row_count: 0,
        }
    }
}

impl FeatureAck {
    /// FEDAUTH acknowledged for the security-token flavour without a PRELOGIN nonce: no data.
    pub fn fedauth() -> Self {
        Self {
            id: super::messages::feature::FEDAUTH,
            data: Vec::new(),
        }
    }

    /// UTF8_SUPPORT acknowledged (1) or declined (0).
    pub fn utf8_support(enabled: bool) -> Self {
        Self {
            id: super::messages::feature::UTF8_SUPPORT,
            data: vec![u8::from(enabled)],
        }
    }
}

fn too_long(what: &'static str, len: usize, max: usize) -> CodecError {
    CodecError::TooLong { what, len, max }
}

/// UTF-16 units of `s`, checked against the one-byte count of a B_VARCHAR.
fn b_varchar_units(what: &'static str, s: &str) -> super::Result<usize> {
    let n = ucs2_units(s);
    if n > usize::from(u8::MAX) {
        return Err(too_long(what, n, usize::from(u8::MAX)));
    }
    Ok(n)
}

fn us_varchar_units(what: &'static str, s: &str) -> super::Result<usize> {
    let n = ucs2_units(s);
    if n > usize::from(u16::MAX) {
        return Err(too_long(what, n, usize::from(u16::MAX)));
    }
    Ok(n)
}

/// The u16 length field of a token body, checked.
fn body_len(what: &'static str, len: usize) -> super::Result<u16> {
    u16::try_from(len).map_err(|_| too_long(what, len, usize::from(u16::MAX)))
}

// Counts were checked by the *_units helpers above, so these casts keep every bit.
fn put_b_varchar(out: &mut BytesMut, s: &str, units: usize) {
    out.put_u8(units as u8);
    put_ucs2(out, s);
}

fn put_us_varchar(out: &mut BytesMut, s: &str, units: usize) {
    out.put_u16_le(units as u16);
    put_ucs2(out, s);
}

fn write_message(out: &mut BytesMut, token: u8, msg: &ServerMessage) -> super::Result<()> {
    let text = us_varchar_units("message", &msg.message)?;
    let server = b_varchar_units("server name", &msg.server)?;
    let procedure = b_varchar_units("procedure name", &msg.procedure)?;
    let len = body_len(
        "ERROR/INFO token",
        4 + 1 + 1 + 2 + 2 * text + 1 + 2 * server + 1 + 2 * procedure + 4,
    )?;
    out.put_u8(token);
    out.put_u16_le(len);
    out.put_i32_le(msg.number);
    out.put_u8(msg.state);
    out.put_u8(msg.class);
    put_us_varchar(out, &msg.message, text);
    put_b_varchar(out, &msg.server, server);
    put_b_varchar(out, &msg.procedure, procedure);
    out.put_i32_le(msg.line);
    Ok(())
}

/// An ERROR token.
pub fn write_error(out: &mut BytesMut, msg: &ServerMessage) -> super::Result<()> {
    write_message(out, 0xAA, msg)
}

/// An INFO token.
pub fn write_info(out: &mut BytesMut, msg: &ServerMessage) -> super::Result<()> {
    write_message(out, 0xAB, msg)
}

/// A DONE, DONEPROC or DONEINPROC token.
pub fn write_done(out: &mut BytesMut, kind: DoneKind, done: &Done) {
    out.put_u8(match kind {
        DoneKind::Done => 0xFD,
        DoneKind::DoneProc => 0xFE,
        DoneKind::DoneInProc => 0xFF,
    });
    out.put_u16_le(done.status);
    out.put_u16_le(done.cur_cmd);
    out.put_u64_le(done.row_count);
}

/// A refused request: the ERROR (e.g. 229, class 14) then a final DONE with DONE_ERROR.
pub fn write_refusal(out: &mut BytesMut, msg: &ServerMessage) -> super::Result<()> {
    write_error(out, msg)?;
    let done = Done {
        status: done_status::ERROR,
        cur_cmd: 0,
        row_count: 0,
    };
    write_done(out, DoneKind::Done, &done);
    Ok(())
}

/// A LOGINACK token.
pub fn write_login_ack(out: &mut BytesMut, ack: &LoginAck) -> super::Result<()> {
    let name = b_varchar_units("program name", &ack.prog_name)?;
    let len = body_len("LOGINACK", 1 + 4 + 1 + 2 * name + 4)?;
    out.put_u8(0xAD);
    out.put_u16_le(len);
    out.put_u8(ack.interface);
    out.put_u32(ack.tds_version);
    put_b_varchar(out, &ack.prog_name, name);
    out.put_slice(&ack.prog_version);
    Ok(())
}

/// The value of an ENVCHANGE, laid out before anything is written.
enum EnvValue<'a> {
    Strings(&'a str, &'a str),
    Bytes(&'a [u8], &'a [u8]),
    Routing(u8, u16, &'a str, Option<&'a str>),
}

fn side(c: &Option<[u8; 5]>) -> &[u8] {
    c.as_ref().map_or(&[], |c| &c[..])
}

/// An ENVCHANGE token for the changes the gateway announces itself: database, language,
/// charset, packet size, collation, begin/commit/rollback transaction, reset acknowledgement,
/// routing. Other types are refused.
pub fn write_env_change(out: &mut BytesMut, change: &EnvChange) -> super::Result<()> {
    use EnvChange as E;
    let (new_size, old_size);
    let (new_coll, old_coll);
    let descriptor;
    let (kind, value) = match change {
        E::Database { new, old } => (env_type::DATABASE, EnvValue::Strings(new, old)),
        E::Language { new, old } => (env_type::LANGUAGE, EnvValue::Strings(new, old)),
        E::Charset { new, old } => (env_type::CHARSET, EnvValue::Strings(new, old)),
        E::PacketSize { new, old } => {
            new_size = new.to_string();
            old_size = old.map(|o| o.to_string()).unwrap_or_default();
            (
                env_type::PACKET_SIZE,
                EnvValue::Strings(&new_size, &old_size),
            )
        }
        E::Collation { new, old } => {
            new_coll = new.map(|c| c.0);
            old_coll = old.map(|c| c.0);
            (
                env_type::COLLATION,
                EnvValue::Bytes(side(&new_coll), side(&old_coll)),
            )
        }
        E::BeginTransaction { descriptor: d } => {
            descriptor = d.to_le_bytes();
            (env_type::BEGIN_TRAN, EnvValue::Bytes(&descriptor, &[]))
        }
        E::CommitTransaction { descriptor: d } | E::RollbackTransaction { descriptor: d } => {
            descriptor = d.to_le_bytes();
            let kind = if matches!(change, E::CommitTransaction { .. }) {
                env_type::COMMIT_TRAN
            } else {
                env_type::ROLLBACK_TRAN
            };
            (kind, EnvValue::Bytes(&[], &descriptor))
        }
        E::ResetConnectionAck => (env_type::RESET_ACK, EnvValue::Bytes(&[], &[])),
        E::Routing {
            protocol,
            port,
            server,
        } => (
            env_type::ROUTING,
            EnvValue::Routing(*protocol, *port, server, None),
        ),
        E::EnhancedRouting {
            protocol,
            port,
            server,
            database,
        } => (
            env_type::ENHANCED_ROUTING,
            EnvValue::Routing(*protocol, *port, server, Some(database)),
        ),
        other => {
            return Err(CodecError::Invalid(format!(
                "the gateway does not write {other:?}"
            )));
        }
    };
    match value {
        EnvValue::Strings(new, old) => {
            let n = b_varchar_units("ENVCHANGE value", new)?;
            let o = b_varchar_units("ENVCHANGE value", old)?;
            out.put_u8(0xE3);
            out.put_u16_le(body_len("ENVCHANGE", 1 + 1 + 2 * n + 1 + 2 * o)?);
            out.put_u8(kind);
            put_b_varchar(out, new, n);
            put_b_varchar(out, old, o);
        }
        EnvValue::Bytes(new, old) => {
            // both sides are at most 8 bytes (collation 5, descriptor 8)
            out.put_u8(0xE3);
            out.put_u16_le((3 + new.len() + old.len()) as u16);
            out.put_u8(kind);
            out.put_u8(new.len() as u8);
            out.put_slice(new);
            out.put_u8(old.len() as u8);
            out.put_slice(old);
        }
        EnvValue::Routing(protocol, port, server, database) => {
            let s = us_varchar_units("routing server", server)?;
            let d = database
                .map(|d| us_varchar_units("routing database", d))
                .transpose()?;
            let value_len = body_len(
                "routing value",
                1 + 2 + 2 + 2 * s + d.map_or(0, |d| 2 + 2 * d),
            )?;
            out.put_u8(0xE3);
            out.put_u16_le(body_len("ENVCHANGE", 1 + 2 + usize::from(value_len) + 2)?);
            out.put_u8(kind);
            out.put_u16_le(value_len);
            out.put_u8(protocol);
            out.put_u16_le(port);
            put_us_varchar(out, server, s);
            if let (Some(database), Some(d)) = (database, d) {
                put_us_varchar(out, database, d);
            }
            out.put_u16_le(0);
        }
    }
    Ok(())
}

/// A FEATUREEXTACK token with `acks` and the terminator.
pub fn write_feature_ext_ack(out: &mut BytesMut, acks: &[FeatureAck]) -> super::Result<()> {
    let mut lens = Vec::with_capacity(acks.len());
    for ack in acks {
        let n = u32::try_from(ack.data.len())
            .map_err(|_| too_long("FEATUREEXTACK data", ack.data.len(), u32::MAX as usize))?;
        if ack.id == super::messages::feature::TERMINATOR {
            return Err(CodecError::Invalid(
                "feature id 0xFF is the terminator".into(),
            ));
        }
        lens.push(n);
    }
    out.put_u8(0xAE);
    for (ack, n) in acks.iter().zip(lens) {
        out.put_u8(ack.id);
        out.put_u32_le(n);
        out.put_slice(&ack.data);
    }
    out.put_u8(super::messages::feature::TERMINATOR);
    Ok(())
}

#[cfg(test)]
#[path = "write_tests.rs"]
mod tests;
