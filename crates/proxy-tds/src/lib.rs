//! The Azure SQL / SQL Server gateway: a wire-level TDS proxy. Clients log in with a token
//! (an Entra access token in LOGIN7's FEDAUTH extension, or a Portcullis access key as the
//! password), every batch and RPC is decided by policy and audited before it reaches the
//! target, and the target is reached with a credential the client never sees.
#![forbid(unsafe_code)]

pub mod check;
pub mod codec;
mod ctx;
mod describe;
mod error;
mod front;
mod held;
pub mod prelogin_tls;
mod prepared;
mod relay;
mod result_plan;
mod results;
mod server;
mod session;
mod stream;
mod target;
mod target_tls;
mod wire;

pub use error::TdsError;
pub use server::TdsProxy;
