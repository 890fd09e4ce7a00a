//! The HTTPS API gateway: a reverse proxy for APIs such as Azure Resource Manager and Key
//! Vault. Callers send their own bearer token; each request is decided by policy on its
//! method and normalised path, and recorded, before it reaches the target; the target is
//! reached with a credential the gateway holds (a static header or an OAuth 2.0
//! client-credentials token), never the caller's; responses are masked where masking
//! applies.
#![forbid(unsafe_code)]

pub mod body;
pub mod check;
pub mod coding;
pub mod dialect;
pub mod exchange;
mod forward;
mod handler;
pub mod headers;
mod held;
mod lines;
pub mod mask;
pub mod path;
mod respond;
pub mod route;
mod server;
mod session;
pub mod sharedkey;
mod upgrade;
mod upstream;

pub use server::HttpProxy;
