//! SQL classification.
