//! The proxy's error type; each error knows which side caused it.

use gateway_core::Side;
use thiserror::Error;

/// Errors of an SSH session.
#[derive(Debug, Error)]
pub enum SshError {
    /// The client broke the protocol or asked for something unacceptable.
    #[error("{0}")]
    Client(String),
    /// The target was unreachable, refused the held credential or its host key.
    #[error("{0}")]
    Target(String),
    /// The gateway could not do its job (audit, host key, configuration).
    #[error("{0}")]
    Gateway(String),
    /// An SSH protocol error from the library.
    #[error("ssh: {0}")]
    Ssh(#[from] russh::Error),
}

impl SshError {
    /// Which side caused the error.
    pub fn side(&self) -> Side {
        match self {
            SshError::Client(_) | SshError::Ssh(_) => Side::Client,
            SshError::Target(_) => Side::Target,
            SshError::Gateway(_) => Side::Gateway,
        }
    }
}
