//! `[[masking]]`: detectors and column rules.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `[[masking]]`: detectors and column rules for some connections' results.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MaskingConfig {
    /// Connections (by name) whose results this block masks.
    pub connections: Vec<String>,
    /// Detectors scanned in every text value: `card`, `email`, `ssn`, `iban`, `phone`, `secret`.
    #[serde(default)]
    pub detectors: Vec<String>,
    /// Columns masked whole: `table.column`, `schema.table.column`, `*.column`; `*`/`?` globs.
    #[serde(default)]
    pub columns: Vec<String>,
    /// JSON documents (HTTP responses): paths whose values are replaced whole, e.g.
    /// `$.value`, `$..connectionString`, `$.properties.primaryKey`, `$.keys[*].value`.
    #[serde(default)]
    pub json_paths: Vec<String>,
    /// Groups exempt from this block's rules (not from other blocks').
    #[serde(default)]
    pub unmasked_groups: Vec<String>,
    /// How matches are replaced unless `strategies` says otherwise.
    #[serde(default)]
    pub strategy: MaskStrategy,
    /// Per-detector (or `column`) strategy overrides, e.g. `{ card = "partial" }`.
    #[serde(default)]
    pub strategies: BTreeMap<String, MaskStrategy>,
}

/// How a masked value is replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskStrategy {
    /// `[REDACTED:card]`.
    #[default]
    Redact,
    /// Keep the last four digits (`****-****-****-1234`) or an e-mail's domain.
    Partial,
    /// A stable keyed token (`[card:9f2c41d07a3b55e1]`): same input, same token.
    Hash,
}
