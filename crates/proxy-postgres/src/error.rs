//! The proxy's error type. Each error knows which side caused it: that decides the SQLSTATE
//! the client is sent and the outcome recorded in audit.

use gateway_core::Side;
use thiserror::Error;

use crate::codec::CodecError;

/// Errors of a Postgres session.
#[derive(Debug, Error)]
pub enum PgError {
    /// The client broke the protocol or sent something unacceptable.
    #[error("{0}")]
    Client(String),
    /// The target was unreachable, refused the held credential or failed.
    #[error("{0}")]
    Target(String),
    /// The gateway could not do its job (audit, store, configuration).
    #[error("{0}")]
    Gateway(String),
    /// A malformed frame, with the side that sent it.
    #[error("malformed message from the {side:?}: {err}")]
    Codec { side: Side, err: CodecError },
    /// A socket error, with the side of the socket.
    #[error("{side:?} connection: {err}")]
    Io { side: Side, err: std::io::Error },
}

impl PgError {
    /// Which side caused the error.
    pub fn side(&self) -> Side {
        match self {
            PgError::Client(_) => Side::Client,
            PgError::Target(_) => Side::Target,
            PgError::Gateway(_) => Side::Gateway,
            PgError::Codec { side, .. } | PgError::Io { side, .. } => *side,
        }
    }

    /// SQLSTATE to report to the client for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self.side() {
            Side::Client => "08P01",
            Side::Target => "08006",
            Side::Gateway => "58000",
        }
    }

    pub(crate) fn client_io(err: std::io::Error) -> PgError {
        PgError::Io {
            side: Side::Client,
            err,
        }
    }

    pub(crate) fn target_io(err: std::io::Error) -> PgError {
        PgError::Io {
            side: Side::Target,
            err,
        }
    }
}

/// Result with the proxy's error.
pub type Result<T, E = PgError> = std::result::Result<T, E>;
