//! Column rules: `table.column`, `schema.table.column`, `*.column`, with `*` and `?` globs
//! inside a segment, matched case-insensitively; plus the statement scan that tells whether a
//! SQL text mentions a covered column.

/// One segment pattern (no `.`): `*` any run, `?` one byte; ASCII case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob(Box<[u8]>);

impl Glob {
    fn new(s: &str) -> Glob {
        Glob(s.as_bytes().to_ascii_lowercase().into_boxed_slice())
    }

    /// True when the pattern is only `*`s: it matches every name.
    pub(crate) fn is_any(&self) -> bool {
        self.0.iter().all(|&c| c == b'*')
    }

    /// Glob match with single-star backtracking (linear in practice, no allocation).
    pub(crate) fn matches(&self, s: &[u8]) -> bool {
        let p = &self.0;
        let (mut pi, mut si) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while si < s.len() {
            let c = s[si].to_ascii_lowercase();
            if pi < p.len() && (p[pi] == b'?' || p[pi] == c) && p[pi] != b'*' {
                pi += 1;
                si += 1;
            } else if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, si));
                pi += 1;
            } else if let Some((sp, ss)) = star {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&c| c == b'*')
    }
}

/// A compiled `[schema.]table.column` pattern.
#[derive(Debug, Clone)]
pub(crate) struct ColumnPattern {
    schema: Option<Glob>,
    table: Glob,
    pub(crate) column: Glob,
}

impl ColumnPattern {
    /// Parse a pattern; the error says what is wrong with it.
    pub(crate) fn parse(s: &str) -> Result<ColumnPattern, String> {
        let parts: Vec<&str> = s.split('.').collect();
        if !(2..=3).contains(&parts.len()) {
            return Err(format!(
                "`{s}` must be `table.column` or `schema.table.column` (use `*.{s}` for any table)"
            ));
        }
        for p in &parts {
            if p.is_empty() {
                return Err(format!("`{s}` has an empty segment"));
            }
            if let Some(c) = p
                .chars()
                .find(|c| c.is_whitespace() || matches!(c, '"' | '[' | ']' | '`'))
            {
                return Err(format!("`{s}` contains `{c}`; write names unquoted"));
            }
        }
        let n = parts.len();
        Ok(ColumnPattern {
            schema: (n == 3).then(|| Glob::new(parts[0])),
            table: Glob::new(parts[n - 2]),
            column: Glob::new(parts[n - 1]),
        })
    }

    /// Does a result column match? `table` may be `schema.table` or `table`; `None` (an
    /// expression, or an origin the caller can't tell) matches on the column name alone, so
    /// the gateway masks rather than leaks.
    pub(crate) fn matches(&self, table: Option<&str>, name: &str) -> bool {
        if !self.column.matches(name.as_bytes()) {
            return false;
        }
        table.is_none_or(|t| self.covers_table(t))
    }

    /// Whether a relation named `t` (`table` or `schema.table`) may hold a
    /// column this rule covers.
    pub(crate) fn covers_table(&self, t: &str) -> bool {
        let (schema, table) = match t.rsplit_once('.') {
            Some((s, t)) => (Some(s), t),
            None => (None, t),
        };
        self.table.matches(table.as_bytes())
            && match (&self.schema, schema) {
                (Some(g), Some(s)) => g.matches(s.as_bytes()),
                _ => true,
            }
    }

    /// The name a statement must mention for this rule to apply to expressions: the column
    /// pattern, or the table pattern when the column part is `*` (`customers.*`).
    pub(crate) fn mention(&self) -> &Glob {
        if self.column.is_any() {
            &self.table
        } else {
            &self.column
        }
    }
}

/// Feed every identifier of a SQL text, quoted or not, to `check` until it returns a rule.
/// String literals and comments are skipped; dollar-quoted bodies are scanned (more masking,
/// never less).
pub(crate) fn mentioned(sql: &str, check: impl Fn(&[u8]) -> Option<usize>) -> Option<usize> {
    let v = sql.as_bytes();
    let n = v.len();
    let mut i = 0;
    while i < n {
        let c = v[i];
        match c {
            b'\'' => {
                i += 1;
                while i < n {
                    if v[i] == b'\'' {
                        if v.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'-' if v.get(i + 1) == Some(&b'-') => {
                i = memchr::memchr(b'\n', &v[i..]).map_or(n, |p| i + p + 1);
            }
            b'/' if v.get(i + 1) == Some(&b'*') => {
                i = memchr::memmem::find(&v[i + 2..], b"*/").map_or(n, |p| i + 2 + p + 2);
            }
            b'"' => {
                // A quoted identifier; `""` inside is one quote, which no rule can match anyway.
                let s = i + 1;
                let e = memchr::memchr(b'"', &v[s..]).map_or(n, |p| s + p);
                if let Some(r) = check(&v[s..e]) {
                    return Some(r);
                }
                i = e + 1;
            }
            _ if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                let s = i;
                while i < n
                    && (v[i].is_ascii_alphanumeric() || matches!(v[i], b'_' | b'$') || v[i] >= 0x80)
                {
                    i += 1;
                }
                if let Some(r) = check(&v[s..i]) {
                    return Some(r);
                }
            }
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(p: &str, s: &str) -> bool {
        Glob::new(p).matches(s.as_bytes())
    }

    #[test]
    fn globs() {
        assert!(g("card_*", "card_number"));
        assert!(g("card_*", "CARD_"));
        assert!(!g("card_*", "xcard_number"));
        assert!(g("*_no", "account_no"));
        assert!(g("a?c", "abc"));
        assert!(!g("a?c", "abbc"));
        assert!(g("*pass*", "user_password_hash"));
        assert!(g("*", ""));
        assert!(!g("ssn", "ssn2"));
        assert!(g("*a*b", "xxaxxbxxab"));
    }

    #[test]
    fn column_patterns() {
        let p = ColumnPattern::parse("customers.ssn").unwrap();
        assert!(p.matches(Some("customers"), "SSN"));
        assert!(p.matches(Some("public.Customers"), "ssn"));
        assert!(!p.matches(Some("orders"), "ssn"));
        assert!(p.matches(None, "ssn"), "unknown origin matches by name");
        let p = ColumnPattern::parse("*.card_*").unwrap();
        assert!(p.matches(Some("payments"), "card_number"));
        let p = ColumnPattern::parse("billing.*.iban").unwrap();
        assert!(p.matches(Some("billing.accounts"), "iban"));
        assert!(!p.matches(Some("public.accounts"), "iban"));
        assert!(
            p.matches(Some("accounts"), "iban"),
            "schema unknown: table decides"
        );
        for bad in ["ssn", "a..b", ".ssn", "a.b.c.d", "a.\"b\"", "a.b c"] {
            assert!(ColumnPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mentions() {
        let pats = [
            ColumnPattern::parse("customers.ssn").unwrap(),
            ColumnPattern::parse("*.password").unwrap(),
            ColumnPattern::parse("secrets.*").unwrap(),
        ];
        let rules = |ident: &[u8]| pats.iter().position(|r| r.mention().matches(ident));
        assert_eq!(
            mentioned("select upper(SSN) from customers", rules),
            Some(0)
        );
        assert_eq!(mentioned("select substr(c.ssn,1,3) from c", rules), Some(0));
        assert_eq!(
            mentioned(r#"select "Password" || '' from u"#, rules),
            Some(1)
        );
        assert_eq!(mentioned("select count(*) from secrets", rules), Some(2));
        assert_eq!(mentioned("select 'ssn' from t -- ssn\n", rules), None);
        assert_eq!(mentioned("select 1 /* password */", rules), None);
        assert_eq!(mentioned("select ssn_hash, passwords from t", rules), None);
    }
}
