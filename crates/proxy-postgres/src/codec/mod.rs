//! PostgreSQL v3 wire codec: pure functions over bytes, no sockets and no async.
//!
//! The relay reads into a `BytesMut`, calls [`next_startup`] for the untagged first packets and
//! [`next_frame`] afterwards, and forwards each [`Frame`]'s `raw` bytes unchanged unless it has a
//! reason to rewrite the message. Message bodies are parsed lazily, only when the relay asks,
//! through the borrowed views in [`frontend`] and [`backend`]. Every length read from the wire is
//! checked against a limit before the codec waits for (or allocates room for) the body.

pub mod backend;
pub mod encode;
mod frame;
pub mod frontend;
pub(crate) mod reader;
mod rewrite;
mod rows;
mod startup;
pub mod tags;

#[cfg(test)]
mod proptests;

pub use backend::{
    AuthRequest, ErrorFields, FieldDescription, parse_auth_request, parse_backend_key_data,
    parse_command_complete, parse_data_row, parse_error_fields, parse_parameter_status,
    parse_ready_for_query, parse_row_description, rows_from_tag,
};
pub use encode::{
    put_auth_cleartext, put_auth_ok, put_backend_key_data, put_bind, put_bind_complete,
    put_cancel_request, put_close_complete, put_command_complete, put_data_row, put_describe,
    put_empty_query, put_error, put_negotiate_protocol_version, put_no_data, put_notice,
    put_parameter_status, put_parse, put_parse_complete, put_password, put_query,
    put_ready_for_query, put_sasl_initial, put_sasl_response, put_ssl_request, put_startup,
    put_sync, put_terminate,
};
pub use frame::{Frame, HEADER_LEN, next_frame};
pub use frontend::{
    Bind, Parse, parse_bind, parse_close, parse_describe, parse_execute, parse_parse,
    parse_password, parse_query,
};
pub use rewrite::{rewrite_data_row, rewrite_error_fields};
pub use startup::{
    CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE, MAX_CANCEL_KEY, MIN_CANCEL_KEY, PROTOCOL_3_0,
    PROTOCOL_3_2, SSL_REQUEST_CODE, StartupPacket, next_startup,
};

/// Default upper bound for one tagged message's length field (large DataRow or Query).
///
/// Callers pick their own bound per connection state; an unauthenticated client deserves a
/// much smaller one.
pub const DEFAULT_MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Upper bound for an untagged startup-phase packet, the same limit PostgreSQL applies.
pub const MAX_STARTUP: usize = 10_000;

/// Why bytes could not be decoded as PostgreSQL protocol.
///
/// The codec does not know which peer sent the bytes; the session maps these to the side that
/// caused them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A length field exceeds the configured maximum; raised before the body is awaited.
    #[error("message {} length {len} exceeds the limit of {max} bytes", TagName(*.tag))]
    TooLong {
        /// Message tag (0 for untagged startup packets).
        tag: u8,
        /// Length as read from the wire.
        len: usize,
        /// Limit in force.
        max: usize,
    },
    /// A length field is impossible for this message (e.g. smaller than the length field).
    #[error("message {} has invalid length {len}", TagName(*.tag))]
    BadLength {
        /// Message tag (0 for untagged startup packets).
        tag: u8,
        /// Length as read from the wire.
        len: usize,
    },
    /// The body does not follow the message layout.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// A startup packet asks for a protocol version the gateway does not speak.
    #[error("unsupported frontend protocol {}.{}", .0 >> 16, .0 & 0xffff)]
    UnsupportedProtocol(u32),
}

/// Renders a tag byte readably in error messages.
struct TagName(u8);

impl std::fmt::Display for TagName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            0 => f.write_str("startup"),
            t if t.is_ascii_graphic() => write!(f, "'{}'", char::from(t)),
            t => write!(f, "0x{t:02x}"),
        }
    }
}
