//! Who asks and for which connection: what a decision is keyed on. A leaf of the policy
//! module, so the engine and its cache both build on it.

use std::collections::BTreeMap;

use crate::config::Protocol;
use crate::identity::Identity;

/// The connection a command is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionRef<'a> {
    /// Connection name as configured (`orders`).
    pub name: &'a str,
    pub protocol: Protocol,
}

/// The parts of a caller that policy sees. Built from a verified [`Identity`]; the
/// `policy test` command builds one from its arguments to explain a decision.
#[derive(Debug, Clone, Copy)]
pub struct PrincipalRef<'a> {
    pub issuer: &'a str,
    pub subject: &'a str,
    pub groups: &'a [String],
    /// Kept claims, visible to policy as tags.
    pub claims: &'a BTreeMap<String, String>,
}

impl<'a> From<&'a Identity> for PrincipalRef<'a> {
    fn from(id: &'a Identity) -> Self {
        PrincipalRef {
            issuer: &id.issuer,
            subject: &id.subject,
            groups: &id.groups,
            claims: &id.claims,
        }
    }
}
