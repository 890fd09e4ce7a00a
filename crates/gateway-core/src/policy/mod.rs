//! Cedar policy: validated against a shipped schema, decided per command with a cache,
//! hot-reloaded without ever running on a half-checked file.
//!
//! A command is allowed if a permit without `@approval` holds and no forbid does; held for
//! review if only `@approval` permits hold; denied otherwise (including when a policy fails
//! to evaluate).

mod cache;
mod compile;
mod decision;
mod engine;
mod explain;
mod reload;
mod request;
mod schema;

pub use decision::{Decision, Permit, Verdict};
pub use engine::PolicyEngine;
pub use explain::{Explanation, PolicyNote};
pub use reload::PolicyHandle;
pub use request::{ConnectionRef, PrincipalRef};
pub use schema::SCHEMA_TEXT;

#[cfg(test)]
mod ssh_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod validation_tests;
