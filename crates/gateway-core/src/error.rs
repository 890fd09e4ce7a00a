//! The crate's error type. Every error says which side caused it, because that picks the
//! error the client is sent and the outcome recorded in audit.
use thiserror::Error;

/// Who is at fault for an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The caller sent something wrong (bad token, malformed message, denied command).
    Client,
    /// The target resource failed or refused.
    Target,
    /// The gateway itself could not do its job (store, policy, configuration).
    Gateway,
}

/// Errors raised by gateway-core.
#[derive(Debug, Error)]
pub enum Error {
    /// A credential was refused (the identity module converts its errors into this).
    #[error("{0}")]
    Identity(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("policy: {0}")]
    Policy(String),
    #[error("store: {0}")]
    Store(String),
    #[error("audit unavailable: {0}")]
    Audit(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Which side caused this error.
    pub fn side(&self) -> Side {
        match self {
            Error::Identity(_) => Side::Client,
            Error::Config(_)
            | Error::Policy(_)
            | Error::Store(_)
            | Error::Audit(_)
            | Error::Io(_) => Side::Gateway,
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Store(e.to_string())
    }
}

/// Result with the crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
