//! A small part of T-SQL, rewritten into the PostgreSQL that does the same, so that tests can
//! send a client's T-SQL where PostgreSQL has another spelling. Everything else goes to
//! PostgreSQL as written (and fails there if it is T-SQL only).
//!
//! | T-SQL | PostgreSQL |
//! |---|---|
//! | `CONVERT(type, expr[, style])` | `CAST(expr AS type)` (the style is dropped) |
//! | the type of a `CAST`/`CONVERT`: `nvarchar(n)`, `nchar(n)`, `varchar(max)`, `datetime2`, `datetime`, `bit`, `tinyint`, `uniqueidentifier`, `varbinary` | `varchar(n)`, `char(n)`, `varchar`, `timestamp`, `timestamp`, `boolean`, `smallint`, `uuid`, `bytea` |
//! | `ISNULL(a, b)`, `LEN(s)` | `coalesce(a, b)`, `length(s)` |
//! | `SELECT … FOR JSON PATH` / `AUTO` (options ignored) | one row, one text column `JSON_F52E2B61-…` holding the rows as a JSON array (`json_agg`) |
//! | `SELECT … FOR XML PATH` / `RAW` / `AUTO` (options ignored) | one row, one text column `XML_F52E2B61-…` holding the rows as `<row>` elements (`query_to_xml`) |
//!
//! `FOR JSON`/`FOR XML` are rewritten only when they end a batch of one statement. String
//! concatenation with `+` is not rewritten: its meaning depends on the operands' types.

/// The column name SQL Server gives a `FOR JSON` result.
pub const JSON_COLUMN: &str = "JSON_F52E2B61-18A1-11d1-B105-00805F49916B";
/// The column name SQL Server gives a `FOR XML` result.
pub const XML_COLUMN: &str = "XML_F52E2B61-18A1-11d1-B105-00805F49916B";

/// `sql` with the T-SQL above rewritten for PostgreSQL.
pub fn translate(sql: &str) -> String {
    let rewritten = rewrite_calls(sql);
    match split_for_clause(&rewritten) {
        Some((query, ForClause::Json)) => format!(
            "SELECT coalesce(json_agg(q)::text, '') AS \"{JSON_COLUMN}\" FROM ({query}) AS q"
        ),
        Some((query, ForClause::Xml)) => format!(
            "SELECT query_to_xml('{}', true, true, '')::text AS \"{XML_COLUMN}\"",
            query.replace('\'', "''")
        ),
        None => rewritten,
    }
}

/// Where the lexically significant parts of `b` are: `next(b, i)` is the index after the
/// literal, quoted name or comment starting at `i`, or `None` when none starts there.
fn skip(b: &[u8], i: usize) -> Option<usize> {
    match b[i] {
        b'\'' | b'"' => Some(closing(b, i + 1, b[i])),
        b'[' => Some(
            b[i..]
                .iter()
                .position(|c| *c == b']')
                .map_or(b.len(), |p| i + p + 1),
        ),
        b'-' if b.get(i + 1) == Some(&b'-') => Some(
            b[i..]
                .iter()
                .position(|c| *c == b'\n')
                .map_or(b.len(), |p| i + p),
        ),
        b'/' if b.get(i + 1) == Some(&b'*') => Some(
            b[i + 2..]
                .windows(2)
                .position(|w| w == b"*/")
                .map_or(b.len(), |p| i + 2 + p + 2),
        ),
        _ => None,
    }
}

/// Past the quote closing a literal opened just before `from` (a doubled quote escapes).
fn closing(b: &[u8], mut from: usize, q: u8) -> usize {
    while from < b.len() {
        if b[from] == q {
            if b.get(from + 1) == Some(&q) {
                from += 2;
                continue;
            }
            return from + 1;
        }
        from += 1;
    }
    b.len()
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'@' | b'#' | b'$')
}

/// The index just past the `)` closing the `(` at `open`, and the top-level commas between.
fn parens(b: &[u8], open: usize) -> Option<(usize, Vec<usize>)> {
    let mut depth = 0usize;
    let mut commas = Vec::new();
    let mut i = open;
    while i < b.len() {
        if let Some(next) = skip(b, i) {
            i = next;
            continue;
        }
        match b[i] {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Some((i + 1, commas));
                }
            }
            b',' if depth == 1 => commas.push(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Rewrite CONVERT, CAST types, ISNULL and LEN calls, inner calls first.
fn rewrite_calls(sql: &str) -> String {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        if let Some(next) = skip(b, i) {
            i = next;
            continue;
        }
        if !is_ident(b[i]) || (i > 0 && (is_ident(b[i - 1]) || b[i - 1] == b'.')) {
            i += 1;
            continue;
        }
        let end = (i..b.len()).find(|&j| !is_ident(b[j])).unwrap_or(b.len());
        let word = sql[i..end].to_ascii_lowercase();
        let open = (end..b.len()).find(|&j| !b[j].is_ascii_whitespace());
        let call = open
            .filter(|&o| b[o] == b'(')
            .and_then(|o| parens(b, o).map(|(close, commas)| (o, close, commas)));
        let Some((open, close, commas)) = call else {
            i = end;
            continue;
        };
        let arg = |from: usize, to: usize| sql[from..to].trim();
        let args: Vec<&str> = std::iter::once(open)
            .chain(commas.iter().copied())
            .zip(commas.iter().copied().chain(std::iter::once(close - 1)))
            .map(|(from, to)| arg(from + 1, to))
            .collect();
        let replacement = match (word.as_str(), args.as_slice()) {
            ("convert", [ty, expr, ..]) if args.len() <= 3 && is_type(ty) => {
                Some(format!("CAST({} AS {})", rewrite_calls(expr), pg_type(ty)))
            }
            ("cast", [inner]) => split_as(inner)
                .map(|(expr, ty)| format!("CAST({} AS {})", rewrite_calls(expr), pg_type(ty))),
            ("isnull", [a, b]) => Some(format!(
                "coalesce({}, {})",
                rewrite_calls(a),
                rewrite_calls(b)
            )),
            ("len", [s]) => Some(format!("length({})", rewrite_calls(s))),
            _ => None,
        };
        match replacement {
            Some(r) => {
                out.push_str(&sql[copied..i]);
                out.push_str(&r);
                copied = close;
                i = close;
            }
            None => i = end,
        }
    }
    out.push_str(&sql[copied..]);
    out
}

/// `expr AS type` inside a CAST: split at the last top-level `AS`.
fn split_as(inner: &str) -> Option<(&str, &str)> {
    let b = inner.as_bytes();
    let mut depth = 0usize;
    let mut found = None;
    let mut i = 0;
    while i < b.len() {
        if let Some(next) = skip(b, i) {
            i = next;
            continue;
        }
        match b[i] {
            b'(' => depth += 1,
            b')' => depth = depth.saturating_sub(1),
            c if depth == 0
                && c.eq_ignore_ascii_case(&b'a')
                && b.get(i + 1).is_some_and(|c| c.eq_ignore_ascii_case(&b's'))
                && i > 0
                && b[i - 1].is_ascii_whitespace()
                && b.get(i + 2).is_some_and(u8::is_ascii_whitespace) =>
            {
                found = Some(i);
            }
            _ => {}
        }
        i += 1;
    }
    found.map(|at| (inner[..at].trim(), inner[at + 2..].trim()))
}

/// Whether `s` reads as a type name: a word, perhaps with `(n)`, `(max)` or `(p, s)`.
fn is_type(s: &str) -> bool {
    let (name, rest) = s.split_once('(').unwrap_or((s, ""));
    let name = name.trim();
    !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b' ')
        && rest
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b',' | b' ' | b')'))
}

/// A T-SQL type name in PostgreSQL's spelling.
fn pg_type(ty: &str) -> String {
    let (name, args) = match ty.split_once('(') {
        Some((n, a)) => (n.trim(), Some(a.trim_end_matches(')').trim())),
        None => (ty.trim(), None),
    };
    let lower = name.to_ascii_lowercase();
    let args = args.filter(|a| !a.eq_ignore_ascii_case("max"));
    let base = match lower.as_str() {
        "nvarchar" => "varchar",
        "nchar" => "char",
        "datetime" | "datetime2" | "smalldatetime" => return "timestamp".into(),
        "bit" => "boolean",
        "tinyint" => "smallint",
        "uniqueidentifier" => "uuid",
        "varbinary" | "binary" | "image" => return "bytea".into(),
        "ntext" => "text",
        _ => name,
    };
    match args {
        Some(a) => format!("{base}({a})"),
        None => base.to_string(),
    }
}

/// What a trailing `FOR` clause asks for.
#[derive(Debug, PartialEq, Eq)]
enum ForClause {
    Json,
    Xml,
}

/// `query FOR JSON …` / `query FOR XML …` ending a batch of one statement: the query and the
/// clause.
fn split_for_clause(sql: &str) -> Option<(&str, ForClause)> {
    let b = sql.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    let mut found = None;
    while i < b.len() {
        if let Some(next) = skip(b, i) {
            i = next;
            continue;
        }
        match b[i] {
            b'(' => depth += 1,
            b')' => depth = depth.saturating_sub(1),
            // Another statement after this one: not rewritten.
            b';' if depth == 0 && !sql[i + 1..].trim().is_empty() => return None,
            c if depth == 0 && (i == 0 || !is_ident(b[i - 1])) && is_ident(c) => {
                let end = (i..b.len()).find(|&j| !is_ident(b[j])).unwrap_or(b.len());
                if sql[i..end].eq_ignore_ascii_case("for") {
                    let next = sql[end..].trim_start();
                    let word: String = next
                        .bytes()
                        .take_while(|c| is_ident(*c))
                        .map(|c| c.to_ascii_uppercase() as char)
                        .collect();
                    let kind = match word.as_str() {
                        "JSON" => Some(ForClause::Json),
                        "XML" => Some(ForClause::Xml),
                        _ => None,
                    };
                    if let Some(k) = kind {
                        found = Some((i, k));
                    }
                }
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found.map(|(at, k)| (sql[..at].trim_end(), k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn convert_becomes_cast_with_postgres_types() {
        assert_eq!(
            translate(
                "SELECT CONVERT(nvarchar(40), ssn) AS s, convert(varchar(max), card, 1) FROM t"
            ),
            "SELECT CAST(ssn AS varchar(40)) AS s, CAST(card AS varchar) FROM t"
        );
        assert_eq!(
            translate("SELECT CONVERT(int, CONVERT(varchar(10), x)), CAST(y AS nvarchar(5))"),
            "SELECT CAST(CAST(x AS varchar(10)) AS int), CAST(y AS varchar(5))"
        );
        assert_eq!(
            translate("SELECT ISNULL(email, 'none'), LEN(name) FROM t"),
            "SELECT coalesce(email, 'none'), length(name) FROM t"
        );
        // Inside literals, quoted names and comments nothing changes.
        let kept =
            "SELECT 'CONVERT(int, x)', \"len\"(1) -- isnull(a, b)\n FROM t /* cast(a as nchar) */";
        assert_eq!(translate(kept), kept);
        // PostgreSQL's own convert(bytea, name, name) is left alone.
        let pg = "SELECT convert('\\x41'::bytea, 'UTF8', 'LATIN1')";
        assert_eq!(translate(pg), pg);
    }

    #[test]
    fn for_json_and_for_xml_wrap_the_query() {
        assert_eq!(
            translate("SELECT id, name FROM people ORDER BY id FOR JSON PATH;"),
            format!(
                "SELECT coalesce(json_agg(q)::text, '') AS \"{JSON_COLUMN}\" FROM \
                 (SELECT id, name FROM people ORDER BY id) AS q"
            )
        );
        assert_eq!(
            translate("SELECT name FROM people WHERE name <> 'x' FOR XML PATH('p'), ROOT('r')"),
            format!(
                "SELECT query_to_xml('SELECT name FROM people WHERE name <> ''x''', true, true, \
                 '')::text AS \"{XML_COLUMN}\""
            )
        );
        // Not at the end of a one-statement batch, or inside a literal: left alone.
        let two = "SELECT 1 FOR JSON PATH; SELECT 2";
        assert_eq!(translate(two), two);
        let lit = "SELECT 'a FOR JSON PATH' AS t";
        assert_eq!(translate(lit), lit);
    }
}
