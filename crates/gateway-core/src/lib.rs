//! Protocol-neutral core of the Portcullis gateway: who is calling (identity), what they
//! are doing (actions and SQL classification), whether they may (policy), and the durable
//! record of it (audit and store). Nothing here knows a wire protocol.
#![forbid(unsafe_code)]

pub mod action;
pub mod approvals;
pub mod audit;
pub mod config;
pub mod error;
pub mod identity;
pub mod listener;
pub mod masking;
pub mod metrics;
pub mod policy;
pub mod recording;
pub mod services;
pub mod shell;
pub mod sql;
pub mod store;
pub mod timefmt;
pub mod util;

pub use action::{Action, SqlKind, SqlStatement, SshKind, SshRequest};
pub use error::{Error, Side};
pub use identity::Identity;
