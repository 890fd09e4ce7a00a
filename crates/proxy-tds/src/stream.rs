//! One byte stream type for every way a TDS connection can be carried: plain TCP, TLS set up
//! inside PRELOGIN (TDS 7.x), or TLS first (TDS 8.0 strict), on either side.

use tokio::io::{AsyncRead, AsyncWrite};

/// What a connection's stream does.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A client's or a target's connection, however it is carried.
pub(crate) type Stream = Box<dyn Io>;
