//! PostgreSQL v3 wire-protocol proxy: clients log in with a token as their password, every
//! statement is decided by policy and audited before it reaches the target, and the target
//! is reached with a credential the client never sees.
#![forbid(unsafe_code)]

mod cancel;
pub mod check;
pub mod codec;
mod ctx;
mod error;
mod front;
mod mask;
mod relay;
mod server;
mod session;
mod stream;
mod target;
mod target_tls;

pub use error::PgError;
pub use server::PgProxy;
