//! The proxy's error type. Each error knows which side caused it, which decides what the
//! client is told and the outcome recorded in audit.

use gateway_core::Side;
use thiserror::Error;

use crate::codec::CodecError;

/// Errors of a TDS session.
#[derive(Debug, Error)]
pub enum TdsError {
    /// The client broke the protocol or sent something unacceptable.
    #[error("{0}")]
    Client(String),
    /// The target was unreachable, refused the held credential or failed.
    #[error("{0}")]
    Target(String),
    /// The gateway could not do its job (audit, store, configuration).
    #[error("{0}")]
    Gateway(String),
    /// A malformed message, with the side that sent it.
    #[error("malformed message from the {side:?}: {err}")]
    Codec { side: Side, err: CodecError },
    /// A socket or TLS error, with the side of the socket.
    #[error("{side:?} connection: {err}")]
    Io { side: Side, err: std::io::Error },
}

impl TdsError {
    /// Which side caused the error.
    pub fn side(&self) -> Side {
        match self {
            TdsError::Client(_) => Side::Client,
            TdsError::Target(_) => Side::Target,
            TdsError::Gateway(_) => Side::Gateway,
            TdsError::Codec { side, .. } | TdsError::Io { side, .. } => *side,
        }
    }

    pub(crate) fn client_io(err: std::io::Error) -> TdsError {
        TdsError::Io {
            side: Side::Client,
            err,
        }
    }

    pub(crate) fn target_io(err: std::io::Error) -> TdsError {
        TdsError::Io {
            side: Side::Target,
            err,
        }
    }

    pub(crate) fn client_codec(err: CodecError) -> TdsError {
        TdsError::Codec {
            side: Side::Client,
            err,
        }
    }

    pub(crate) fn target_codec(err: CodecError) -> TdsError {
        TdsError::Codec {
            side: Side::Target,
            err,
        }
    }
}

pub type Result<T> = std::result::Result<T, TdsError>;
