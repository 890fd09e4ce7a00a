//! Protocol-neutral core of the Portcullis gateway: who is calling (identity), what they
//! are doing (actions and SQL classification), whether they may (policy), and the durable
//! record of it (audit and store). Nothing here knows a wire protocol.
#![forbid(unsafe_code)]

pub mod action;
pub mod approvals;
pub mod audit;
pub mod config;
pub mod error;
pub mod event;
pub mod gate;
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

/// Every problem in `cfg`: its own sections' ([`config::Config::validate`]) and what the
/// parts built from it find (the masking blocks' detectors, column patterns and strategies).
/// Empty means the gateway can start with it (secrets aside).
pub fn check_config(cfg: &config::Config) -> Vec<String> {
    let mut errs = cfg.validate();
    for (i, m) in cfg.masking.iter().enumerate() {
        for e in masking::block_problems(m) {
            errs.push(format!("masking[{i}]{e}"));
        }
    }
    errs
}
