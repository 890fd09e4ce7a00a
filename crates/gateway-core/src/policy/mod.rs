//! Cedar policy.
