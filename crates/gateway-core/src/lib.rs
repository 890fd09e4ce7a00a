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
pub mod oauth;
pub mod policy;
pub mod recording;
pub mod services;
pub mod shell;
pub mod sql;
pub mod store;
pub mod timefmt;
pub mod tls;
pub mod util;

pub use action::{Action, SqlKind, SqlStatement, SshKind, SshRequest};
pub use error::{Error, Side};
pub use identity::Identity;

/// What a proxy checks in each connection of its protocol: the config, the connection, and the
/// path to prefix problems with (`connections[2]`).
pub type ConnectionCheck = fn(&config::Config, &config::ConnectionConfig, &str) -> Vec<String>;

/// Every problem in `cfg`: its own sections' ([`config::Config::validate`]), what the parts
/// built from it find (the masking blocks' detectors, column patterns and strategies), and
/// what each protocol's proxy finds in its connections (`checks`). Empty means the gateway
/// can start with it (secrets aside).
pub fn check_config(
    cfg: &config::Config,
    checks: &[(config::Protocol, ConnectionCheck)],
) -> Vec<String> {
    let mut errs = cfg.validate();
    for (i, c) in cfg.connections.iter().enumerate() {
        for (protocol, check) in checks {
            if c.protocol == *protocol {
                errs.extend(check(cfg, c, &format!("connections[{i}]")));
            }
        }
    }
    for (i, m) in cfg.masking.iter().enumerate() {
        for e in masking::block_problems(m) {
            errs.push(format!("masking[{i}]{e}"));
        }
    }
    errs
}
