//! The combined scan: one pass over a value with a 256-entry byte-class table. Bytes that can
//! start nothing (lower-case letters, most punctuation) cost one table lookup; a trigger byte
//! (a digit, `@`, `+`, `=`/`:`, `A`, `J`, `B`) hands over to the validators in
//! [`super::detectors`], which confirm or reject a span. Findings come out in order and never
//! overlap.

use super::counts::{Detector, Kind};
use super::detectors::{self as d, alnum};

const DIGIT: u8 = 1;
const AT: u8 = 2;
const PLUS: u8 = 3;
const PAIR: u8 = 4;
const UPPER_A: u8 = 5;
const UPPER_J: u8 = 6;
const UPPER_B: u8 = 7;

/// Receives findings. `floor` is where the previous finding ended: nothing may start before it.
pub(crate) trait Sink {
    /// End of the last finding.
    fn floor(&self) -> usize;
    /// A finding `v[start..end]`; `start >= floor()`.
    fn found(&mut self, start: usize, end: usize, kind: Kind);
}

/// The byte classes for one set of enabled detectors.
#[derive(Debug, Clone)]
pub(crate) struct Scanner {
    class: [u8; 256],
    set: u8,
}

/// Most groups a number token is split into before the rest starts a new token.
const MAX_GROUPS: usize = 12;

impl Scanner {
    /// A scanner for the detectors in bit set `set` (see `Detector::bit`).
    pub(crate) fn new(set: u8) -> Scanner {
        let mut class = [0u8; 256];
        let on = |d: Detector| set & d.bit() != 0;
        if on(Detector::Card) || on(Detector::Ssn) || on(Detector::Iban) {
            for c in b'0'..=b'9' {
                class[c as usize] = DIGIT;
            }
        }
        if on(Detector::Email) {
            class[b'@' as usize] = AT;
        }
        if on(Detector::Phone) {
            class[b'+' as usize] = PLUS;
        }
        if on(Detector::Secret) {
            class[b'=' as usize] = PAIR;
            class[b':' as usize] = PAIR;
            class[b'A' as usize] = UPPER_A;
            class[b'J' as usize] = UPPER_J;
            class[b'B' as usize] = UPPER_B;
        }
        Scanner { class, set }
    }

    pub(crate) fn has(&self, d: Detector) -> bool {
        self.set & d.bit() != 0
    }

    /// True when no detector is enabled.
    pub(crate) fn is_empty(&self) -> bool {
        self.set == 0
    }

    /// Scan `v[from..]`; `v[..from]` is context only (it may decide a word boundary).
    pub(crate) fn scan<S: Sink>(&self, v: &[u8], from: usize, sink: &mut S) {
        let mut i = from;
        let n = v.len();
        let class = &self.class;
        loop {
            // Find the next trigger: eight bytes at a time (one OR of eight lookups, one
            // branch), then its exact place in the chunk.
            while let Some(c) = v.get(i..i + 8) {
                let any = class[c[0] as usize]
                    | class[c[1] as usize]
                    | class[c[2] as usize]
                    | class[c[3] as usize]
                    | class[c[4] as usize]
                    | class[c[5] as usize]
                    | class[c[6] as usize]
                    | class[c[7] as usize];
                if any != 0 {
                    break;
                }
                i += 8;
            }
            while i < n && class[v[i] as usize] == 0 {
                i += 1;
            }
            let Some(&b) = v.get(i) else { break };
            let c = class[b as usize];
            if c == DIGIT {
                i = self.number(v, i, sink);
                continue;
            }
            let found = match c {
                AT => d::email(v, i, sink.floor()).map(|(s, e)| (s, e, Kind::Email)),
                PLUS => d::phone(v, i).map(|e| (i, e, Kind::Phone)),
                PAIR => d::pair(v, i),
                UPPER_A => d::aws_key(v, i).map(|e| (i, e, Kind::AwsKey)),
                UPPER_J => d::jwt(v, i).map(|(s, e)| (s, e, Kind::Jwt)),
                _ => d::pem(v, i).map(|(s, e)| (s, e, Kind::PrivateKey)),
            };
            match found {
                Some((s, e, kind)) if s >= sink.floor() && e > s => {
                    sink.found(s, e, kind);
                    i = e;
                }
                _ => i += 1,
            }
        }
    }

    /// A run of digits starting at `i`: an IBAN (when two capitals precede it), else a number
    /// token (digit groups joined by single spaces or dashes) checked for cards and SSNs.
    /// Returns where scanning resumes.
    fn number<S: Sink>(&self, v: &[u8], i: usize, sink: &mut S) -> usize {
        if self.has(Detector::Iban)
            && i >= 2
            && v[i - 1].is_ascii_uppercase()
            && v[i - 2].is_ascii_uppercase()
            && (i == 2 || !alnum(v[i - 3]))
            && i - 2 >= sink.floor()
            && let Some(e) = d::iban(v, i - 2)
        {
            sink.found(i - 2, e, Kind::Iban);
            return e;
        }
        if !left_boundary(v, i) {
            return skip_word(v, i);
        }
        // Most numbers are one short group: settle those without the group arrays.
        let mut j = i;
        while j < v.len() && v[j].is_ascii_digit() {
            j += 1;
        }
        if j - i > 19 {
            return skip_word(v, j);
        }
        let joined = j + 1 < v.len() && matches!(v[j], b' ' | b'-') && v[j + 1].is_ascii_digit();
        if !joined {
            if !d::right_boundary(v, j) {
                return skip_word(v, j);
            }
            if self.has(Detector::Card) && d::card_digits_ok(&v[i..j], j - i) {
                sink.found(i, j, Kind::Card);
            }
            return j;
        }
        let mut groups = [(0usize, 0usize); MAX_GROUPS];
        let mut seps = [0u8; MAX_GROUPS];
        let mut ng = 0;
        let mut j = i;
        let mut digits = 0;
        loop {
            let gs = j;
            while j < v.len() && v[j].is_ascii_digit() {
                j += 1;
            }
            if j - gs > 19 {
                return skip_word(v, j);
            }
            groups[ng] = (gs, j);
            digits += j - gs;
            ng += 1;
            if ng < MAX_GROUPS
                && j + 1 < v.len()
                && matches!(v[j], b' ' | b'-')
                && v[j + 1].is_ascii_digit()
            {
                seps[ng - 1] = v[j];
                j += 1;
                continue;
            }
            break;
        }
        if !d::right_boundary(v, j) {
            return skip_word(v, j);
        }
        if digits >= 13 {
            self.windows(v, &groups[..ng], &seps[..ng], sink);
        } else if digits >= 9 && ng >= 3 && self.has(Detector::Ssn) {
            // Too few digits for a card: only an SSN (groups 3-2-4) can be here.
            self.ssn_only(v, &groups[..ng], &seps[..ng], sink);
        }
        j
    }

    /// The SSN half of [`Scanner::windows`], for tokens too short to hold a card.
    fn ssn_only<S: Sink>(&self, v: &[u8], groups: &[(usize, usize)], seps: &[u8], sink: &mut S) {
        let ng = groups.len();
        let mut s = 0;
        while s + 2 < ng {
            let (g0, g1, g2) = (groups[s], groups[s + 1], groups[s + 2]);
            let edges = (s == 0 || seps[s - 1] == b' ') && (s + 3 == ng || seps[s + 2] == b' ');
            if edges
                && seps[s] == seps[s + 1]
                && d::ssn_ok(&v[g0.0..g0.1], &v[g1.0..g1.1], &v[g2.0..g2.1])
            {
                sink.found(g0.0, g2.1, Kind::Ssn);
                s += 3;
            } else {
                s += 1;
            }
        }
    }

    /// Cards and SSNs inside a token: a window is a run of groups with one separator between
    /// them, bounded by the token's ends or by spaces (so `12 4111 1111 1111 1111` still finds
    /// the card, and `123-45-6789-1` is not an SSN).
    fn windows<S: Sink>(&self, v: &[u8], groups: &[(usize, usize)], seps: &[u8], sink: &mut S) {
        let card = self.has(Detector::Card);
        let ssn = self.has(Detector::Ssn);
        let ng = groups.len();
        let mut s = 0;
        'start: while s < ng {
            if s > 0 && seps[s - 1] != b' ' {
                s += 1;
                continue;
            }
            // The longest run of groups from `s` sharing one separator.
            let sep = if s + 1 < ng { seps[s] } else { 0 };
            let mut emax = s;
            while emax + 1 < ng && seps[emax] == sep {
                emax += 1;
            }
            for e in (s..=emax).rev() {
                if e + 1 < ng && seps[e] != b' ' {
                    continue;
                }
                let (start, end) = (groups[s].0, groups[e].1);
                let digits: usize = groups[s..=e].iter().map(|(a, b)| b - a).sum();
                let lens_ok = e == s
                    || (groups[s].1 - groups[s].0 == 4
                        && groups[s + 1..=e]
                            .iter()
                            .all(|(a, b)| (3..=6).contains(&(b - a))));
                if card && lens_ok && d::card_digits_ok(&v[start..end], digits) {
                    sink.found(start, end, Kind::Card);
                    s = e + 1;
                    continue 'start;
                }
                if ssn
                    && e == s + 2
                    && sep != 0
                    && d::ssn_ok(
                        &v[groups[s].0..groups[s].1],
                        &v[groups[s + 1].0..groups[s + 1].1],
                        &v[groups[e].0..groups[e].1],
                    )
                {
                    sink.found(start, end, Kind::Ssn);
                    s = e + 1;
                    continue 'start;
                }
            }
            s += 1;
        }
    }
}

/// A number starts a token only after a non-word byte. A byte after a JSON/C escape (`\n`) is
/// not a word; a number glued to a word by `-`, `.`, `/` or `_` (`ORD-2024`, `v1.2`) is part of
/// an identifier.
fn left_boundary(v: &[u8], i: usize) -> bool {
    if i == 0 {
        return true;
    }
    let p = v[i - 1];
    if alnum(p) {
        return i >= 2 && v[i - 2] == b'\\' && p.is_ascii_lowercase();
    }
    !(matches!(p, b'.' | b'-' | b'/' | b'_') && i >= 2 && alnum(v[i - 2]))
}

/// Past the rest of a word (letters, digits, and joiners followed by a digit).
fn skip_word(v: &[u8], mut j: usize) -> usize {
    while j < v.len()
        && (alnum(v[j])
            || (matches!(v[j], b'.' | b'-' | b'/' | b'_')
                && v.get(j + 1).is_some_and(u8::is_ascii_digit)))
    {
        j += 1;
    }
    j
}

/// A whole numeric value (a `bigint`/`numeric` column) that is a card number.
pub(crate) fn numeric_card(v: &[u8]) -> bool {
    v.iter().all(u8::is_ascii_digit) && d::card_digits_ok(v, v.len())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Collects findings, for tests.
    #[derive(Default)]
    pub(crate) struct Collect(pub Vec<(usize, usize, Kind)>);

    impl Sink for Collect {
        fn floor(&self) -> usize {
            self.0.last().map_or(0, |f| f.1)
        }
        fn found(&mut self, start: usize, end: usize, kind: Kind) {
            self.0.push((start, end, kind));
        }
    }

    pub(crate) fn all() -> Scanner {
        Scanner::new(Detector::ALL.iter().fold(0, |a, d| a | d.bit()))
    }

    pub(crate) fn finds(text: &str) -> Vec<(String, Kind)> {
        let mut c = Collect::default();
        all().scan(text.as_bytes(), 0, &mut c);
        c.0.iter()
            .map(|&(s, e, k)| (text[s..e].to_string(), k))
            .collect()
    }

    fn one(text: &str, want: &str, kind: Kind) {
        assert_eq!(finds(text), vec![(want.to_string(), kind)], "in {text:?}");
    }

    fn none(text: &str) {
        assert_eq!(finds(text), vec![], "in {text:?}");
    }

    #[test]
    fn cards() {
        one("4111111111111111", "4111111111111111", Kind::Card);
        one(
            "card: 4111 1111 1111 1111.",
            "4111 1111 1111 1111",
            Kind::Card,
        );
        one("x,4111-1111-1111-1111,y", "4111-1111-1111-1111", Kind::Card);
        one("amex 3782 822463 10005", "3782 822463 10005", Kind::Card);
        one("qty 12 4111111111111111", "4111111111111111", Kind::Card);
        one(r#"["a\n4111111111111111"]"#, "4111111111111111", Kind::Card);
        none("4111111111111112");
        none("order 1234567890123456 and 9999999999999995");
        none("ORD-4111111111111111");
        none("4111111111111111x");
        none("41111111111111111111111");
        none("4111-1111-1111-1111-7");
    }

    #[test]
    fn ssns() {
        one("ssn 123-45-6789", "123-45-6789", Kind::Ssn);
        one("123 45 6789", "123 45 6789", Kind::Ssn);
        one("a||123-45-6789||b", "123-45-6789", Kind::Ssn);
        none("123456789");
        none("000-45-6789 666-45-6789 912-45-6789 123-00-6789 123-45-0000");
        none("123-45-6789-1");
        none("ORD-123-45-6789");
        none("123-45 6789");
    }

    #[test]
    fn lookalikes_are_left_alone() {
        none("2024-01-02 12:30:00");
        none("550e8400-e29b-41d4-a716-446655440000");
        none("192.168.100.200 10.0.0.1");
        none("version 1.2.3-rc.4 build 20240102");
        none("ORD-2024-000123 INV/2023/99887766");
        none("call 555-123-4567 or (555) 123 4567");
        none("total 1,234,567,890.12 EUR");
        none("AKIA is a prefix");
        none("eyJ alone. not a token");
    }

    #[test]
    fn emails_phones_ibans() {
        one(
            "mail: Jane.Doe@Example.com;",
            "Jane.Doe@Example.com",
            Kind::Email,
        );
        one(
            "call +1 (555) 123-4567 now",
            "+1 (555) 123-4567",
            Kind::Phone,
        );
        one(
            "iban DE89 3704 0044 0532 0130 00.",
            "DE89 3704 0044 0532 0130 00",
            Kind::Iban,
        );
        one(
            "GB82WEST12345698765432",
            "GB82WEST12345698765432",
            Kind::Iban,
        );
        none("DE89 3704 0044 0532 0130 01");
    }

    #[test]
    fn secrets() {
        one(
            "id AKIAIOSFODNN7EXAMPLE used",
            "AKIAIOSFODNN7EXAMPLE",
            Kind::AwsKey,
        );
        one(
            "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
            Kind::Jwt,
        );
        one(
            "k=-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n-----END OPENSSH PRIVATE KEY-----",
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n-----END OPENSSH PRIVATE KEY-----",
            Kind::PrivateKey,
        );
        one("Server=x;Pwd=hunter2;", "hunter2", Kind::Pair);
        one("password: hunter2 ok", "hunter2", Kind::Pair);
        one(r#"{"api_key":"abc"}"#, "abc", Kind::Pair);
        one(
            "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=Zm9v/+==;EndpointSuffix=x",
            "Zm9v/+==",
            Kind::Azure,
        );
    }

    #[test]
    fn several_in_one_value_in_order() {
        let f = finds("a@b.io, 4111111111111111, 123-45-6789 password=x +4915112345678");
        let kinds: Vec<Kind> = f.iter().map(|x| x.1).collect();
        assert_eq!(
            kinds,
            vec![Kind::Email, Kind::Card, Kind::Ssn, Kind::Pair, Kind::Phone]
        );
    }

    #[test]
    fn disabled_detectors_do_not_fire() {
        let s = Scanner::new(Detector::Email.bit());
        let mut c = Collect::default();
        s.scan(b"4111111111111111 password=x a@b.io", 0, &mut c);
        assert_eq!(c.0.len(), 1);
        assert_eq!(c.0[0].2, Kind::Email);
    }

    #[test]
    fn numeric_cards() {
        assert!(numeric_card(b"4111111111111111"));
        assert!(!numeric_card(b"4111111111111112"));
        assert!(!numeric_card(b"-4111111111111111"));
        assert!(!numeric_card(b"42"));
    }
}
