//! SSH proxy: clients log in with a token (password or keyboard-interactive answer), every
//! exec, shell, sftp and forward request is decided by policy and audited before it reaches
//! the target, the target is reached with a key or password the client never sees and its
//! host key is pinned, and interactive sessions are recorded as asciicast v2.
#![forbid(unsafe_code)]

pub mod check;
mod error;
mod handler;
pub mod hostkey;
pub mod names;
mod relay;
mod server;
mod session;
mod target;

pub use error::SshError;
pub use server::SshProxy;
