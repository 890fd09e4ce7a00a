//! Tokens the gateway writes itself: the errors and notices of its own refusals and holds,
//! the DONE that ends an answer, and what completes a client's login.

use bytes::{BufMut, BytesMut};

use super::text;
use super::tokens::{DONE, ENVCHANGE, ERROR, FEATUREEXTACK, INFO, LOGINACK};

pub const DONE_MORE: u16 = 0x0001;
pub const DONE_ERROR: u16 = 0x0002;
pub const DONE_COUNT: u16 = 0x0010;
pub const DONE_ATTN: u16 = 0x0020;

pub use super::login7::FEATURE_FEDAUTH;

/// Characters at most in a message the gateway writes (US_VARCHAR holds 65535).
const MAX_MESSAGE: usize = 4000;

#[allow(clippy::too_many_arguments)]
fn put_message(
    out: &mut BytesMut,
    ty: u8,
    number: i32,
    state: u8,
    class: u8,
    message: &str,
    server: &str,
    procedure: &str,
    line: i32,
) {
    let message: String = message.chars().take(MAX_MESSAGE).collect();
    let server: String = server.chars().take(128).collect();
    let procedure: String = procedure.chars().take(128).collect();
    let (m, s, p) = (
        text::encode(&message),
        text::encode(&server),
        text::encode(&procedure),
    );
    let len = 4 + 1 + 1 + 2 + m.len() + 1 + s.len() + 1 + p.len() + 4;
    out.put_u8(ty);
    out.put_u16_le(len as u16);
    out.put_i32_le(number);
    out.put_u8(state);
    out.put_u8(class);
    out.put_u16_le((m.len() / 2) as u16);
    out.extend_from_slice(&m);
    out.put_u8((s.len() / 2) as u8);
    out.extend_from_slice(&s);
    out.put_u8((p.len() / 2) as u8);
    out.extend_from_slice(&p);
    out.put_i32_le(line);
}

/// An ERROR token.
#[allow(clippy::too_many_arguments)]
pub fn put_error(
    out: &mut BytesMut,
    number: i32,
    state: u8,
    class: u8,
    message: &str,
    server: &str,
    procedure: &str,
    line: i32,
) {
    put_message(
        out, ERROR, number, state, class, message, server, procedure, line,
    );
}

/// An INFO token (a message the client shows without failing).
#[allow(clippy::too_many_arguments)]
pub fn put_info(
    out: &mut BytesMut,
    number: i32,
    state: u8,
    class: u8,
    message: &str,
    server: &str,
    procedure: &str,
    line: i32,
) {
    put_message(
        out, INFO, number, state, class, message, server, procedure, line,
    );
}

/// A DONE token.
pub fn put_done(out: &mut BytesMut, status: u16, cur_cmd: u16, rows: u64) {
    out.put_u8(DONE);
    out.put_u16_le(status);
    out.put_u16_le(cur_cmd);
    out.put_u64_le(rows);
}

/// An ENVCHANGE of a text value (database 1, language 2, packet size 4).
pub fn put_env_change_text(out: &mut BytesMut, ty: u8, new: &str, old: &str) {
    let (n, o) = (text::encode(new), text::encode(old));
    out.put_u8(ENVCHANGE);
    out.put_u16_le((1 + 1 + n.len() + 1 + o.len()) as u16);
    out.put_u8(ty);
    out.put_u8((n.len() / 2) as u8);
    out.extend_from_slice(&n);
    out.put_u8((o.len() / 2) as u8);
    out.extend_from_slice(&o);
}

/// A LOGINACK for SQL (interface 1).
pub fn put_login_ack(out: &mut BytesMut, tds_version: u32, program: &str) {
    let p = text::encode(program);
    out.put_u8(LOGINACK);
    out.put_u16_le((1 + 4 + 1 + p.len() + 4) as u16);
    out.put_u8(1);
    out.put_u32(tds_version);
    out.put_u8((p.len() / 2) as u8);
    out.extend_from_slice(&p);
    out.extend_from_slice(&[16, 0, 0x03, 0xE8]);
}

/// A FEATUREEXTACK of `acks` (feature id, data).
pub fn put_feature_ext_ack(out: &mut BytesMut, acks: &[(u8, &[u8])]) {
    out.put_u8(FEATUREEXTACK);
    for (id, data) in acks {
        out.put_u8(*id);
        out.put_u32_le(data.len() as u32);
        out.extend_from_slice(data);
    }
    out.put_u8(0xFF);
}
