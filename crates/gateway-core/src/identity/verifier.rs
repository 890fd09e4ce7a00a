//! Verifies presented credentials into identities.
pub struct Verifier;
