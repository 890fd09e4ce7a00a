//! TDS (MS-TDS 7.4 and 8.0) messages as the gateway reads and writes them. Every length read
//! from the wire is bounded before anything is allocated for it.

use std::fmt;

pub mod charset;
pub mod cursor;
pub mod fedauth;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod login7;
pub mod messages;
pub mod metadata;
pub mod packet;
pub mod prelogin;
#[cfg(test)]
mod proptests;
pub mod request;
pub mod rows;
pub mod rpc;
pub mod rpc_types;
pub mod text;
#[cfg(test)]
mod token_proptests;
mod tokenbuf;
pub mod tokens;
pub mod types;
pub mod values;
pub mod write;

/// What is wrong with bytes read from the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// A length field points past the end of what is there.
    Truncated(&'static str),
    /// A length over the bound the gateway accepts.
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    /// Anything else malformed.
    Invalid(String),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Truncated(what) => write!(f, "truncated {what}"),
            CodecError::TooLong { what, len, max } => {
                write!(f, "{what} of {len} bytes is over the limit of {max}")
            }
            CodecError::Invalid(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for CodecError {}

pub type Result<T> = std::result::Result<T, CodecError>;
