//! What can go wrong, and on which side: the TDS client, PostgreSQL, or the server's own setup.

use proxy_tds::codec::CodecError;

/// An error of the test server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TDS client sent something this server cannot take; its session ends.
    #[error("client: {0}")]
    Client(String),
    /// PostgreSQL could not be reached, refused the login or broke the protocol.
    #[error("postgres: {0}")]
    Postgres(String),
    /// A bad setting (listen address, PostgreSQL URL, certificate).
    #[error("config: {0}")]
    Config(String),
    /// Reading or writing a socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    pub(crate) fn client_codec(e: CodecError) -> Error {
        Error::Client(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;
