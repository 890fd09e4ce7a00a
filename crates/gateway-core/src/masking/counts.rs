//! What fired, never what was masked: detector kinds and the per-statement counts the caller
//! accumulates for the audit event.

use std::collections::BTreeMap;

/// A detector family as named in config (`detectors = [...]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Detector {
    /// Payment card numbers (Luhn-checked).
    Card,
    /// E-mail addresses.
    Email,
    /// US social security numbers written with separators.
    Ssn,
    /// International bank account numbers (mod-97 checked).
    Iban,
    /// International phone numbers (`+` then 8–15 digits).
    Phone,
    /// Credentials: cloud keys, connection-string passwords, JWTs, private keys, `password=` pairs.
    Secret,
}

impl Detector {
    /// Every detector, in index order.
    pub const ALL: [Detector; 6] = [
        Detector::Card,
        Detector::Email,
        Detector::Ssn,
        Detector::Iban,
        Detector::Phone,
        Detector::Secret,
    ];

    /// The name used in config and audit.
    pub fn name(self) -> &'static str {
        match self {
            Detector::Card => "card",
            Detector::Email => "email",
            Detector::Ssn => "ssn",
            Detector::Iban => "iban",
            Detector::Phone => "phone",
            Detector::Secret => "secret",
        }
    }

    /// Parse a config name.
    pub fn from_name(s: &str) -> Option<Detector> {
        Detector::ALL.into_iter().find(|d| d.name() == s)
    }

    /// Dense index, for per-detector arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// What exactly a detector found; secrets are split by sub-kind for audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Card,
    Email,
    Ssn,
    Iban,
    Phone,
    /// AWS access key id (`AKIA…`/`ASIA…`).
    AwsKey,
    /// Azure storage `AccountKey=` / `SharedAccessSignature=` / `sig=` values.
    Azure,
    /// A JSON Web Token.
    Jwt,
    /// A PEM private key block.
    PrivateKey,
    /// A `password=`/`secret:`/`"token":"…"` pair or URL user-info password.
    Pair,
}

/// Number of [`Kind`]s; the size of [`MaskCounts`]' fixed array.
pub const KIND_COUNT: usize = 10;

impl Kind {
    const ALL: [Kind; KIND_COUNT] = [
        Kind::Card,
        Kind::Email,
        Kind::Ssn,
        Kind::Iban,
        Kind::Phone,
        Kind::AwsKey,
        Kind::Azure,
        Kind::Jwt,
        Kind::PrivateKey,
        Kind::Pair,
    ];

    /// The detector family this kind belongs to (whose strategy applies).
    pub fn detector(self) -> Detector {
        match self {
            Kind::Card => Detector::Card,
            Kind::Email => Detector::Email,
            Kind::Ssn => Detector::Ssn,
            Kind::Iban => Detector::Iban,
            Kind::Phone => Detector::Phone,
            Kind::AwsKey | Kind::Azure | Kind::Jwt | Kind::PrivateKey | Kind::Pair => {
                Detector::Secret
            }
        }
    }

    /// Name in audit counts, e.g. `card` or `secret.aws_key`.
    pub fn audit_name(self) -> &'static str {
        match self {
            Kind::Card => "card",
            Kind::Email => "email",
            Kind::Ssn => "ssn",
            Kind::Iban => "iban",
            Kind::Phone => "phone",
            Kind::AwsKey => "secret.aws_key",
            Kind::Azure => "secret.azure",
            Kind::Jwt => "secret.jwt",
            Kind::PrivateKey => "secret.private_key",
            Kind::Pair => "secret.pair",
        }
    }
}

/// Masking decisions for one statement (or any span the caller chooses): how many findings
/// of each kind, how many values each column rule replaced, and how many values changed.
/// Counting never allocates except the first time a column rule with a new index fires.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaskCounts {
    kinds: [u64; KIND_COUNT],
    columns: Vec<u64>,
    values: u64,
}

impl MaskCounts {
    /// Empty counts.
    pub fn new() -> MaskCounts {
        MaskCounts::default()
    }

    pub(crate) fn add_kind(&mut self, k: Kind) {
        self.kinds[k as usize] += 1;
    }

    pub(crate) fn add_column(&mut self, rule: usize) {
        if self.columns.len() <= rule {
            self.columns.resize(rule + 1, 0);
        }
        self.columns[rule] += 1;
    }

    pub(crate) fn add_value(&mut self) {
        self.values += 1;
    }

    /// Findings of one kind so far.
    pub fn kind(&self, k: Kind) -> u64 {
        self.kinds[k as usize]
    }

    /// Values replaced whole by column rule `rule` (index into the session's rules).
    pub fn column(&self, rule: usize) -> u64 {
        self.columns.get(rule).copied().unwrap_or(0)
    }

    /// Values changed or nulled.
    pub fn values(&self) -> u64 {
        self.values
    }

    /// True when nothing was masked.
    pub fn is_empty(&self) -> bool {
        self.values == 0
    }

    /// Add another set of counts (e.g. per-statement into per-session).
    pub fn merge(&mut self, other: &MaskCounts) {
        for (a, b) in self.kinds.iter_mut().zip(other.kinds) {
            *a += b;
        }
        for (i, n) in other.columns.iter().enumerate() {
            if *n > 0 {
                if self.columns.len() <= i {
                    self.columns.resize(i + 1, 0);
                }
                self.columns[i] += n;
            }
        }
        self.values += other.values;
    }

    /// Reset to zero, keeping the column vector's capacity.
    pub fn clear(&mut self) {
        self.kinds = [0; KIND_COUNT];
        self.columns.iter_mut().for_each(|n| *n = 0);
        self.values = 0;
    }

    /// Render for an audit event: `{"card": 2, "secret.jwt": 1, "column:*.password": 5,
    /// "values": 8}`; zero counts are left out. `rules` names the column rules (see
    /// `SessionMasks::column_rule_names`).
    pub fn render(&self, rules: &[String]) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for k in Kind::ALL {
            let n = self.kinds[k as usize];
            if n > 0 {
                m.insert(k.audit_name().to_string(), n);
            }
        }
        for (i, n) in self.columns.iter().enumerate() {
            if *n > 0 {
                let name = rules.get(i).map(String::as_str).unwrap_or("?");
                *m.entry(format!("column:{name}")).or_insert(0) += n;
            }
        }
        if self.values > 0 {
            m.insert("values".to_string(), self.values);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_names_kinds_and_rules_and_skips_zeros() {
        let mut c = MaskCounts::new();
        c.add_kind(Kind::Card);
        c.add_kind(Kind::Jwt);
        c.add_kind(Kind::Jwt);
        c.add_column(1);
        c.add_value();
        let r = c.render(&["customers.ssn".into(), "*.password".into()]);
        assert_eq!(r.get("card"), Some(&1));
        assert_eq!(r.get("secret.jwt"), Some(&2));
        assert_eq!(r.get("column:*.password"), Some(&1));
        assert!(!r.contains_key("column:customers.ssn"));
        assert!(!r.contains_key("email"));
        let mut d = MaskCounts::new();
        d.merge(&c);
        d.merge(&c);
        assert_eq!(d.kind(Kind::Jwt), 4);
        assert_eq!(d.column(1), 2);
        d.clear();
        assert!(d.is_empty() && d.column(1) == 0);
    }

    #[test]
    fn detector_names_round_trip() {
        for d in Detector::ALL {
            assert_eq!(Detector::from_name(d.name()), Some(d));
        }
        assert_eq!(Detector::from_name("cards"), None);
    }
}
