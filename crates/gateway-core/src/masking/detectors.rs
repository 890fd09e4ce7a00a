//! Validators and span finders for each detector. Every function is called by the scanner at
//! a candidate position (a trigger byte) and either confirms a span or rejects cheaply; none
//! allocates.

use super::counts::Kind;

#[inline]
pub(crate) fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

#[inline]
fn b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Luhn checksum over the digits of `s` (separators ignored).
pub(crate) fn luhn(s: &[u8]) -> bool {
    let mut sum = 0u32;
    let mut double = false;
    for &b in s.iter().rev() {
        if !b.is_ascii_digit() {
            continue;
        }
        let mut d = u32::from(b - b'0');
        if double {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
        double = !double;
    }
    sum.is_multiple_of(10)
}

/// Card numbers start with an issuer prefix from 2 to 6 (Mastercard 2221–2720, Amex/Diners/
/// JCB 3, Visa 4, Mastercard/Maestro 5, Discover/UnionPay/Maestro 6). Checking it halves the
/// false positives Luhn alone lets through on random numbers.
pub(crate) fn card_prefix(first: u8, second: u8) -> bool {
    match first {
        b'3'..=b'6' => true,
        b'2' => second == b'2' || second == b'7',
        _ => false,
    }
}

/// A card: 13–19 digits, issuer prefix, Luhn. `s` holds digits and separators only.
pub(crate) fn card_digits_ok(s: &[u8], digits: usize) -> bool {
    if !(13..=19).contains(&digits) {
        return false;
    }
    let mut it = s.iter().filter(|b| b.is_ascii_digit());
    let (Some(&a), Some(&b)) = (it.next(), it.next()) else {
        return false;
    };
    card_prefix(a, b) && luhn(s)
}

/// SSN parts: area not 000, 666 or 9xx; group not 00; serial not 0000.
pub(crate) fn ssn_ok(area: &[u8], group: &[u8], serial: &[u8]) -> bool {
    area.len() == 3
        && group.len() == 2
        && serial.len() == 4
        && area != b"000"
        && area != b"666"
        && area[0] != b'9'
        && group != b"00"
        && serial != b"0000"
}

/// Total IBAN length per country (the SWIFT registry). Unknown countries are not IBANs.
fn iban_len(cc: [u8; 2]) -> Option<usize> {
    Some(match &cc {
        b"NO" => 15,
        b"BE" => 16,
        b"DK" | b"FI" | b"FO" | b"GL" | b"NL" => 18,
        b"MK" | b"SI" => 19,
        b"AT" | b"BA" | b"EE" | b"KZ" | b"LT" | b"LU" | b"XK" => 20,
        b"CH" | b"HR" | b"LI" | b"LV" => 21,
        b"BG" | b"BH" | b"CR" | b"DE" | b"GB" | b"GE" | b"IE" | b"ME" | b"RS" | b"VA" => 22,
        b"AE" | b"GI" | b"IL" | b"IQ" | b"TL" => 23,
        b"AD" | b"CZ" | b"ES" | b"MD" | b"PK" | b"RO" | b"SA" | b"SE" | b"SK" | b"TN" | b"VG" => 24,
        b"PT" | b"ST" => 25,
        b"IS" | b"TR" => 26,
        b"FR" | b"GR" | b"IT" | b"MC" | b"MR" | b"SM" => 27,
        b"AL" | b"AZ" | b"BY" | b"CY" | b"DO" | b"GT" | b"HU" | b"LB" | b"PL" | b"SV" => 28,
        b"BR" | b"EG" | b"PS" | b"QA" | b"UA" => 29,
        b"JO" | b"KW" | b"MU" => 30,
        b"MT" | b"SC" => 31,
        b"LC" => 32,
        _ => return None,
    })
}

/// ISO 13616 check: move the first four characters to the end, letters as 10..35, mod 97 = 1.
fn iban_mod97(chars: &[u8]) -> bool {
    // Accumulate in 64 bits and reduce only when the next step could overflow: one division
    // per ~15 digits instead of one per character.
    let mut r = 0u64;
    for &c in chars[4..].iter().chain(&chars[..4]) {
        if r >= 100_000_000_000_000 {
            r %= 97;
        }
        r = match c {
            b'0'..=b'9' => r * 10 + u64::from(c - b'0'),
            b'A'..=b'Z' => r * 100 + u64::from(c - b'A') + 10,
            _ => return false,
        };
    }
    r % 97 == 1
}

/// An IBAN starting at `s` (two upper-case letters, two check digits, then the BBAN; single
/// spaces allowed between groups of four). Returns the end of the span.
pub(crate) fn iban(v: &[u8], s: usize) -> Option<usize> {
    let len = iban_len([*v.get(s)?, *v.get(s + 1)?])?;
    let mut buf = [0u8; 34];
    let mut count = 0;
    let mut p = s;
    while count < len && p < v.len() {
        let c = v[p];
        if c.is_ascii_digit() || c.is_ascii_uppercase() {
            buf[count] = c;
            count += 1;
            p += 1;
        } else if c == b' ' && count % 4 == 0 && v.get(p + 1).is_some_and(|&n| alnum(n)) {
            p += 1;
        } else {
            break;
        }
    }
    if count < len || !buf[2].is_ascii_digit() || !buf[3].is_ascii_digit() {
        return None;
    }
    if v.get(p).is_some_and(|&c| alnum(c)) {
        return None;
    }
    iban_mod97(&buf[..len]).then_some(p)
}

fn email_local(b: u8) -> bool {
    alnum(b) || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

/// An e-mail address around the `@` at `at`; the local part does not reach below `floor`
/// (already replaced text). Domain: two or more labels, alphabetic TLD of 2+ letters.
pub(crate) fn email(v: &[u8], at: usize, floor: usize) -> Option<(usize, usize)> {
    let mut s = at;
    while s > floor && at - s < 64 && email_local(v[s - 1]) {
        s -= 1;
    }
    while s < at && v[s] == b'.' {
        s += 1;
    }
    if s == at {
        return None;
    }
    let mut e = at + 1;
    let mut labels = 0;
    let mut last: (usize, usize);
    loop {
        let ls = e;
        while e < v.len() && e - at < 254 && (alnum(v[e]) || v[e] == b'-') {
            e += 1;
        }
        if e == ls {
            return None;
        }
        labels += 1;
        last = (ls, e);
        if e + 1 < v.len() && v[e] == b'.' && alnum(v[e + 1]) {
            e += 1;
            continue;
        }
        break;
    }
    let tld = &v[last.0..last.1];
    (labels >= 2 && tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic)).then_some((s, e))
}

/// After a number: the next byte must not continue a word (`4111…x`, `1.2.3`, `12-ab`).
pub(crate) fn right_boundary(v: &[u8], e: usize) -> bool {
    match v.get(e) {
        None => true,
        Some(&c) if alnum(c) => false,
        Some(b'.' | b'-' | b'/' | b'_') => !v.get(e + 1).is_some_and(|&n| alnum(n)),
        Some(_) => true,
    }
}

/// An E.164-like phone number at the `+` at `i`: 8–15 digits, first digit 1–9, single
/// separators (space, `-`, `.`) and parentheses between digits.
pub(crate) fn phone(v: &[u8], i: usize) -> Option<usize> {
    if i > 0 && alnum(v[i - 1]) {
        return None;
    }
    let mut j = i + 1;
    if v.get(j) == Some(&b' ') {
        j += 1;
    }
    if !v.get(j).is_some_and(|c| (b'1'..=b'9').contains(c)) {
        return None;
    }
    let mut digits = 0;
    // End of the last digit, and of the last group that closed with 8–15 digits (where a
    // number running on, `+1 555 123 4567 00 0000`, is cut).
    let mut last = j;
    let mut best = None;
    while j < v.len() {
        let c = v[j];
        if c.is_ascii_digit() {
            digits += 1;
            last = j;
            if digits > 15 {
                return best;
            }
        } else if matches!(c, b' ' | b'-' | b'.' | b'(') {
            if (8..=15).contains(&digits) && v[j - 1].is_ascii_digit() {
                best = Some(j);
            }
            if !v
                .get(j + 1)
                .is_some_and(|n| n.is_ascii_digit() || *n == b'(')
            {
                break;
            }
        } else if c == b')' {
            if !v
                .get(j + 1)
                .is_some_and(|n| n.is_ascii_digit() || matches!(n, b' ' | b'-' | b'.'))
            {
                break;
            }
        } else {
            break;
        }
        j += 1;
    }
    if digits >= 8 && right_boundary(v, last + 1) {
        Some(last + 1)
    } else {
        best
    }
}

/// An AWS access key id at `i`: `AKIA`/`ASIA` and 16 upper-case letters or digits, whole word.
pub(crate) fn aws_key(v: &[u8], i: usize) -> Option<usize> {
    let key = v.get(i..i + 20)?;
    if !(key.starts_with(b"AKIA") || key.starts_with(b"ASIA")) {
        return None;
    }
    if i > 0 && alnum(v[i - 1]) {
        return None;
    }
    let body_ok = key[4..]
        .iter()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    (body_ok && !v.get(i + 20).is_some_and(|&c| alnum(c))).then_some(i + 20)
}

/// A JWT whose `J` is at `j` (it starts `eyJ`, the encoding of `{"`): three or more base64url
/// segments joined by dots, header of 10+ and payload of 3+ characters.
pub(crate) fn jwt(v: &[u8], j: usize) -> Option<(usize, usize)> {
    if j < 2 || &v[j - 2..j] != b"ey" {
        return None;
    }
    let s = j - 2;
    if s > 0 && (b64url(v[s - 1]) || v[s - 1] == b'.') {
        return None;
    }
    let seg = |mut p: usize| {
        while p < v.len() && b64url(v[p]) {
            p += 1;
        }
        p
    };
    let h = seg(s);
    if h - s < 10 || v.get(h) != Some(&b'.') {
        return None;
    }
    let p = seg(h + 1);
    if p - (h + 1) < 3 || v.get(p) != Some(&b'.') {
        return None;
    }
    let mut e = seg(p + 1);
    while v.get(e) == Some(&b'.') && v.get(e + 1).is_some_and(|&c| b64url(c)) {
        e = seg(e + 1);
    }
    Some((s, e))
}

/// A PEM private key block whose `BEGIN` starts at `b`: from `-----BEGIN … PRIVATE KEY-----`
/// through the matching `-----END …-----`, or to the end of the value when the end line is
/// missing. Triggered on the rare `B` rather than the common `-`.
pub(crate) fn pem(v: &[u8], b: usize) -> Option<(usize, usize)> {
    if b < 5 || &v[b - 5..b] != b"-----" || !v[b..].starts_with(b"BEGIN ") {
        return None;
    }
    let i = b - 5;
    const BEGIN: &[u8] = b"-----BEGIN ";
    let label_start = i + BEGIN.len();
    let window = &v[label_start..v.len().min(label_start + 64)];
    let label_end = label_start + memchr::memmem::find(window, b"-----")?;
    if !v[label_start..label_end].ends_with(b"PRIVATE KEY") {
        return None;
    }
    let body = label_end + 5;
    let Some(end) = memchr::memmem::find(&v[body..], b"-----END ") else {
        return Some((i, v.len()));
    };
    let tail = body + end + 9;
    let window = &v[tail..v.len().min(tail + 64)];
    Some(match memchr::memmem::find(window, b"-----") {
        Some(k) => (i, tail + k + 5),
        None => (i, v.len()),
    })
}

/// Where a secret pair's value ends when it is not quoted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Term {
    /// Stops at `&` too (a query string or key=value list).
    General,
    /// A SAS token contains `&`; only `;`, whitespace and quotes end it.
    Sas,
}

/// Keys whose value is a secret, matched case-insensitively as a suffix of the key
/// (`db_password`, `client_secret`, `access_token`). `sig` must be the whole key.
const PAIR_KEYS: &[(&[u8], Kind, Term)] = &[
    (b"password", Kind::Pair, Term::General),
    (b"passwd", Kind::Pair, Term::General),
    (b"pwd", Kind::Pair, Term::General),
    (b"secret", Kind::Pair, Term::General),
    (b"token", Kind::Pair, Term::General),
    (b"apikey", Kind::Pair, Term::General),
    (b"api_key", Kind::Pair, Term::General),
    (b"api-key", Kind::Pair, Term::General),
    (b"access_key", Kind::Pair, Term::General),
    (b"private_key", Kind::Pair, Term::General),
    (b"accountkey", Kind::Azure, Term::General),
    (b"sharedaccesssignature", Kind::Azure, Term::Sas),
];

/// Whether a key names a secret; the kind and how its unquoted value ends.
fn secret_key(key: &[u8]) -> Option<(Kind, Term)> {
    let last = key.last()?.to_ascii_lowercase();
    if !matches!(last, b'd' | b't' | b'n' | b'y' | b'e' | b'g') {
        return None;
    }
    if key.eq_ignore_ascii_case(b"sig") {
        return Some((Kind::Azure, Term::General));
    }
    PAIR_KEYS.iter().find_map(|(k, kind, term)| {
        (key.len() >= k.len() && key[key.len() - k.len()..].eq_ignore_ascii_case(k))
            .then_some((*kind, *term))
    })
}

/// A JSON object key (raw, between its quotes) that names a secret.
pub(crate) fn is_secret_key(key: &[u8]) -> bool {
    secret_key(key).is_some()
}

/// Already-masked output (`[REDACTED:…]`, `[secret:…]`) is not masked again.
pub(crate) fn is_mask_token(v: &[u8]) -> bool {
    v.starts_with(b"[REDACTED:")
        || v.starts_with(b"[secret:")
        || v.starts_with(b"[column:")
        || matches!(v, b"null" | b"true" | b"false")
}

/// A secret value after the `=` or `:` at `i`: `password=…`, `Pwd=…;`, `"token": "…"`,
/// `AccountKey=…`, or the password in `scheme://user:password@host`.
pub(crate) fn pair(v: &[u8], i: usize) -> Option<(usize, usize, Kind)> {
    let next = v.get(i + 1).copied();
    if matches!(next, Some(b'=' | b':')) {
        return None;
    }
    if v[i] == b':' && v[i + 1..].starts_with(b"//") {
        return url_password(v, i + 3);
    }
    // The key: back over blanks, quotes and escapes, then the key's word characters.
    let mut k = i;
    let mut skipped = 0;
    while k > 0 && skipped < 4 && matches!(v[k - 1], b' ' | b'\t' | b'"' | b'\'' | b'\\') {
        k -= 1;
        skipped += 1;
    }
    let key_end = k;
    while k > 0 && key_end - k < 40 && (alnum(v[k - 1]) || matches!(v[k - 1], b'_' | b'-')) {
        k -= 1;
    }
    let (kind, term) = secret_key(&v[k..key_end])?;
    // The value: past blanks, then quoted (up to the matching quote) or bare.
    let mut j = i + 1;
    while j < v.len() && j - i <= 4 && matches!(v[j], b' ' | b'\t') {
        j += 1;
    }
    let (vs, ve) = match v.get(j) {
        Some(&q @ (b'"' | b'\'')) => {
            let mut e = j + 1;
            while e < v.len() && v[e] != q {
                e += if v[e] == b'\\' { 2 } else { 1 };
            }
            (j + 1, e.min(v.len()))
        }
        Some(b'\\') if v.get(j + 1) == Some(&b'"') => {
            let vs = j + 2;
            let e = memchr::memmem::find(&v[vs..], b"\\\"").map_or(v.len(), |p| vs + p);
            (vs, e)
        }
        _ => {
            let mut e = j;
            while e < v.len() && !ends_bare(v[e], term) {
                e += 1;
            }
            (j, e)
        }
    };
    (ve > vs && !is_mask_token(&v[vs..ve])).then_some((vs, ve, kind))
}

fn ends_bare(b: u8, term: Term) -> bool {
    match b {
        b' ' | b'\t' | b'\r' | b'\n' | b';' | b'"' | b'\'' | b'\\' | b'<' | b'>' => true,
        b',' | b'&' | b')' | b']' | b'}' => term == Term::General,
        _ => false,
    }
}

/// `scheme://user:password@host`: the password, when the user-info has one.
fn url_password(v: &[u8], from: usize) -> Option<(usize, usize, Kind)> {
    let mut colon = None;
    let mut j = from;
    while j < v.len() && j - from < 256 {
        match v[j] {
            b'@' => break,
            b'/' | b'?' | b'#' | b'"' | b'\'' | b' ' | b'\t' | b'\r' | b'\n' => return None,
            b':' if colon.is_none() => colon = Some(j),
            _ => {}
        }
        j += 1;
    }
    let c = colon?;
    (v.get(j) == Some(&b'@') && j > c + 1).then_some((c + 1, j, Kind::Pair))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_and_prefix() {
        assert!(card_digits_ok(b"4111111111111111", 16));
        assert!(card_digits_ok(b"4111-1111-1111-1111", 16));
        assert!(card_digits_ok(b"378282246310005", 15));
        assert!(card_digits_ok(b"2221000000000009", 16));
        assert!(!card_digits_ok(b"4111111111111112", 16), "Luhn fails");
        assert!(
            !card_digits_ok(b"1111111111111117", 16),
            "no issuer starts with 1"
        );
        assert!(!card_digits_ok(b"411111111111", 12), "too short");
    }

    #[test]
    fn ssn_rules() {
        assert!(ssn_ok(b"123", b"45", b"6789"));
        for (a, g, s) in [
            ("000", "45", "6789"),
            ("666", "45", "6789"),
            ("912", "45", "6789"),
            ("123", "00", "6789"),
            ("123", "45", "0000"),
        ] {
            assert!(
                !ssn_ok(a.as_bytes(), g.as_bytes(), s.as_bytes()),
                "{a}-{g}-{s}"
            );
        }
    }

    #[test]
    fn iban_checks_country_length_and_mod97() {
        assert_eq!(iban(b"DE89370400440532013000", 0), Some(22));
        assert_eq!(iban(b"GB82 WEST 1234 5698 7654 32.", 0), Some(27));
        assert_eq!(iban(b"NO9386011117947", 0), Some(15));
        assert_eq!(iban(b"DE89370400440532013001", 0), None, "mod 97");
        assert_eq!(iban(b"DE8937040044053201300", 0), None, "short");
        assert_eq!(iban(b"DE893704004405320130001", 0), None, "glued to more");
        assert_eq!(iban(b"ZZ89370400440532013000", 0), None, "no such country");
    }

    #[test]
    fn email_shapes() {
        let v = b"mail a.b+c@mail.example.co.uk now";
        assert_eq!(email(v, 10, 0), Some((5, 29)));
        assert_eq!(email(b"user@localhost", 4, 0), None);
        assert_eq!(email(b"pkg@1.2.3", 3, 0), None);
        assert_eq!(email(b"@handle", 0, 0), None);
        assert_eq!(email(b"x@example.c", 1, 0), None);
    }

    #[test]
    fn phone_shapes() {
        assert_eq!(phone(b"+1 (555) 123-4567", 0), Some(17));
        assert_eq!(phone(b"tel +447911123456.", 4), Some(17));
        assert_eq!(phone(b"+1234567", 0), None, "7 digits");
        assert_eq!(phone(b"+0123456789", 0), None, "country code 0");
        assert_eq!(phone(b"1+23456789012", 1), None, "arithmetic");
        assert_eq!(phone(b"+1234567890123456", 0), None, "16 digits");
        assert_eq!(
            phone(b"+1 555 123 4567 00 0000", 0),
            Some(18),
            "cut at the last group within 15 digits"
        );
    }

    #[test]
    fn secret_shapes() {
        assert_eq!(aws_key(b"AKIAIOSFODNN7EXAMPLE", 0), Some(20));
        assert_eq!(aws_key(b"AKIAIOSFODNN7EXAMPLEX", 0), None);
        assert_eq!(aws_key(b"xAKIAIOSFODNN7EXAMPLE", 1), None);
        assert_eq!(aws_key(b"AKIAiosfodnn7example", 0), None);
        let t = b"Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig-_x ok";
        assert_eq!(jwt(t, 9), Some((7, 50)));
        assert_eq!(jwt(b"eyJhbGciOiJIUzI1NiJ9", 2), None, "one segment");
        let k = b"x -----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY----- y";
        assert_eq!(pem(k, 7), Some((2, k.len() - 2)));
        assert_eq!(pem(b"-----BEGIN CERTIFICATE-----\nMII", 5), None);
        assert_eq!(pem(b"-----BEGIN PRIVATE KEY-----\nMII", 5), Some((0, 31)));
        assert_eq!(pem(b"BEGIN PRIVATE KEY", 0), None);
    }

    #[test]
    fn pairs() {
        let v = b"Server=db;User Id=app;Password=s3cr;et;";
        let (s, e, k) = pair(v, 30).unwrap();
        assert_eq!((&v[s..e], k), (&b"s3cr"[..], Kind::Pair));
        let v = br#"{"db_password": "a\"b", "n": 1}"#;
        let (s, e, _) = pair(v, 14).unwrap();
        assert_eq!(&v[s..e], br#"a\"b"#);
        let v = b"AccountName=x;AccountKey=abc+/==;EndpointSuffix=core";
        let (s, e, k) = pair(v, 24).unwrap();
        assert_eq!((&v[s..e], k), (&b"abc+/=="[..], Kind::Azure));
        let v = b"SharedAccessSignature=sv=2020&sig=abc%3D;x";
        let (s, e, _) = pair(v, 21).unwrap();
        assert_eq!(&v[s..e], b"sv=2020&sig=abc%3D");
        let v = b"postgres://app:pw1@db:5432/x";
        let (s, e, _) = pair(v, 8).unwrap();
        assert_eq!(&v[s..e], b"pw1");
        assert!(pair(b"time 12:30", 7).is_none());
        assert!(pair(b"tokens: 3", 6).is_none());
        assert!(pair(b"password=[REDACTED:secret]", 8).is_none());
        assert!(pair(b"a==b", 1).is_none());
    }
}
