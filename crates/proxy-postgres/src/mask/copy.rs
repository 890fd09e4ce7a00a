//! COPY … TO STDOUT under masking: what the statement asks for (source, columns, format,
//! delimiter) and the rewriting of text and CSV rows field by field. Pure functions.

use bytes::{BufMut, BytesMut};
use gateway_core::masking::Masked;

/// The shape of a `COPY … TO STDOUT` statement, as far as masking needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CopyStatement {
    /// A query whose RowDescription describes the copied columns (`SELECT cols FROM table` or
    /// the inner query), or `None` when the statement could not be read that far.
    pub describe: Option<String>,
    pub format: CopyFormat,
    /// The first line is a header of column names (CSV `HEADER`).
    pub header: bool,
}

/// How COPY data is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CopyFormat {
    /// PostgreSQL's text format with this delimiter.
    Text { delimiter: u8 },
    /// CSV with this delimiter and quote (escape = quote).
    Csv { delimiter: u8, quote: u8 },
    /// Binary: fields decoded by their column types ([`binary`]).
    Binary,
    /// Options this proxy does not split by (a non-default ESCAPE, a multi-byte delimiter):
    /// every line is scanned whole by the detectors.
    Lines,
}

/// SQL tokens good enough for a COPY statement: words (lower-cased), quoted identifiers,
/// string literals, punctuation. `None` on anything unexpected.
fn tokens(sql: &str) -> Option<Vec<(usize, usize, Tok)>> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() || c == b';' {
            i += 1;
        } else if c == b'-' && b.get(i + 1) == Some(&b'-') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let end = sql[i + 2..].find("*/")?;
            i += 2 + end + 2;
        } else if c == b'\'' || c == b'"' {
            i += 1;
            loop {
                if i >= b.len() {
                    return None;
                }
                if b[i] == c {
                    if b.get(i + 1) == Some(&c) {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i += 1;
            let inner = sql[start + 1..i - 1].replace(
                if c == b'\'' { "''" } else { "\"\"" },
                if c == b'\'' { "'" } else { "\"" },
            );
            out.push((
                start,
                i,
                if c == b'\'' {
                    Tok::Str(inner)
                } else {
                    Tok::Ident(inner)
                },
            ));
        } else if c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80 {
            while i < b.len()
                && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$' || b[i] >= 0x80)
            {
                i += 1;
            }
            // E'…' strings have escapes this reader does not interpret.
            if b.get(i) == Some(&b'\'') {
                return None;
            }
            out.push((start, i, Tok::Word(sql[start..i].to_ascii_lowercase())));
        } else {
            i += 1;
            out.push((start, i, Tok::Punct(c)));
        }
    }
    Some(out)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Ident(String),
    Str(String),
    Punct(u8),
}

impl Tok {
    fn word(&self) -> Option<&str> {
        match self {
            Tok::Word(w) => Some(w),
            _ => None,
        }
    }
}

/// Read a `COPY … TO STDOUT` statement; `None` when it is not one (COPY FROM, COPY TO a
/// file, not COPY at all).
pub(crate) fn parse_copy(sql: &str) -> Option<CopyStatement> {
    let toks = tokens(sql);
    let Some(toks) = toks else {
        // Unreadable: if it is a COPY it gets the most cautious handling.
        let head = sql.trim_start().get(..4)?;
        return head.eq_ignore_ascii_case("copy").then_some(CopyStatement {
            describe: None,
            header: false,
            format: if sql.to_ascii_lowercase().contains("binary") {
                CopyFormat::Binary
            } else {
                CopyFormat::Lines
            },
        });
    };
    if toks.first()?.2.word() != Some("copy") {
        return None;
    }
    let mut i = 1;
    let describe;
    if toks.get(i)?.2 == Tok::Punct(b'(') {
        // COPY ( query ) TO …
        let mut depth = 0;
        let open = toks[i].1;
        let mut close = None;
        for (j, t) in toks.iter().enumerate().skip(i) {
            match t.2 {
                Tok::Punct(b'(') => depth += 1,
                Tok::Punct(b')') => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(j);
                        break;
                    }
                }
                _ => {}
            }
        }
        let close = close?;
        describe = Some(sql[open..toks[close].0].to_string());
        i = close + 1;
    } else {
        // COPY [schema.]table [( columns )] TO …
        let start = toks.get(i)?.0;
        while matches!(
            toks.get(i)?.2,
            Tok::Word(_) | Tok::Ident(_) | Tok::Punct(b'.')
        ) {
            if toks[i].2.word() == Some("to") || toks[i].2.word() == Some("from") {
                break;
            }
            i += 1;
        }
        let table = &sql[start..toks.get(i - 1)?.1];
        let mut cols = "*";
        if toks.get(i)?.2 == Tok::Punct(b'(') {
            let open = toks[i].1;
            let close = toks.iter().skip(i).position(|t| t.2 == Tok::Punct(b')'))? + i;
            cols = &sql[open..toks[close].0];
            i = close + 1;
        }
        describe = Some(format!("SELECT {cols} FROM {table}"));
    }
    if toks.get(i)?.2.word() != Some("to") || toks.get(i + 1)?.2.word() != Some("stdout") {
        return None;
    }
    let Some(options) = copy_options(toks.get(i + 2..)?) else {
        // Options this reader cannot follow: every line is masked whole.
        return Some(CopyStatement {
            describe,
            format: CopyFormat::Lines,
            header: false,
        });
    };
    let mut csv = false;
    let mut binary = false;
    let mut delimiter = None;
    let mut quote = None;
    let mut odd = false;
    let mut header = false;
    for (name, value) in &options {
        let one_byte = |v: &Option<OptValue>| match v {
            Some(OptValue::Str(s)) if s.len() == 1 => Some(s.as_bytes()[0]),
            _ => None,
        };
        match name.as_str() {
            "csv" => csv = true,
            "binary" => binary = true,
            "header" => {
                header = match value {
                    None => true,
                    Some(v) => !matches!(v.text(), "false" | "off" | "0"),
                }
            }
            "format" => match value.as_ref().map(OptValue::text) {
                Some("csv") => csv = true,
                Some("binary") => binary = true,
                Some("text") => {}
                _ => odd = true,
            },
            "delimiter" => match one_byte(value) {
                Some(d) => delimiter = Some(d),
                None => odd = true,
            },
            "quote" => match one_byte(value) {
                Some(q) => quote = Some(q),
                None => odd = true,
            },
            "escape" => {
                if one_byte(value) != Some(quote.unwrap_or(b'"')) {
                    odd = true
                }
            }
            // Options that change no byte of the rows' layout.
            "null" | "default" | "encoding" | "force_quote" | "force_not_null" | "force_null"
            | "freeze" | "on_error" | "log_verbosity" | "reject_limit" => {}
            _ => odd = true,
        }
    }
    let format = if binary {
        CopyFormat::Binary
    } else if odd {
        CopyFormat::Lines
    } else if csv {
        CopyFormat::Csv {
            delimiter: delimiter.unwrap_or(b','),
            quote: quote.unwrap_or(b'"'),
        }
    } else {
        CopyFormat::Text {
            delimiter: delimiter.unwrap_or(b'\t'),
        }
    };
    Some(CopyStatement {
        describe,
        format,
        header,
    })
}

/// The value of one COPY option, as the grammar gives it to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OptValue {
    /// A keyword or number (lower-cased), a quoted identifier or a string: option values
    /// compare as text whatever their spelling (`FORMAT csv`, `FORMAT 'csv'`,
    /// `FORMAT "csv"`).
    Str(String),
    /// A parenthesised list or `*` (column lists of FORCE_QUOTE and friends).
    List,
}

impl OptValue {
    fn text(&self) -> &str {
        match self {
            OptValue::Str(s) => s,
            OptValue::List => "",
        }
    }
}

/// The options after `TO STDOUT`, in either of PostgreSQL's syntaxes: `[WITH] ( name
/// [value] [, …] )` or the older `[WITH] CSV HEADER DELIMITER [AS] ',' …`. `None` on anything
/// else.
fn copy_options(rest: &[(usize, usize, Tok)]) -> Option<Vec<(String, Option<OptValue>)>> {
    let mut rest = rest;
    if rest.first().and_then(|t| t.2.word()) == Some("with") {
        rest = &rest[1..];
    }
    let mut out = Vec::new();
    if rest.first().map(|t| &t.2) == Some(&Tok::Punct(b'(')) {
        let mut i = 1;
        loop {
            let name = match &rest.get(i)?.2 {
                Tok::Word(w) => w.clone(),
                Tok::Ident(w) => w.clone(),
                _ => return None,
            };
            i += 1;
            let value = match &rest.get(i)?.2 {
                Tok::Punct(b',' | b')') => None,
                Tok::Word(w) | Tok::Ident(w) | Tok::Str(w) => {
                    i += 1;
                    Some(OptValue::Str(w.clone()))
                }
                Tok::Punct(b'*') => {
                    i += 1;
                    Some(OptValue::List)
                }
                Tok::Punct(b'(') => {
                    let close = rest.iter().skip(i).position(|t| t.2 == Tok::Punct(b')'))?;
                    i += close + 1;
                    Some(OptValue::List)
                }
                _ => return None,
            };
            out.push((name, value));
            match rest.get(i)?.2 {
                Tok::Punct(b',') => i += 1,
                Tok::Punct(b')') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
        return (i == rest.len()).then_some(out);
    }
    // The older syntax: keywords, some with a string argument.
    let mut i = 0;
    while let Some(t) = rest.get(i) {
        let w = t.2.word()?;
        i += 1;
        match w {
            "binary" | "csv" | "header" => out.push((w.to_owned(), None)),
            "delimiter" | "null" | "quote" | "escape" | "encoding" => {
                if rest.get(i).and_then(|t| t.2.word()) == Some("as") {
                    i += 1;
                }
                let Tok::Str(v) = &rest.get(i)?.2 else {
                    return None;
                };
                i += 1;
                out.push((w.to_owned(), Some(OptValue::Str(v.clone()))));
            }
            "force" => {
                // FORCE QUOTE cols|*, FORCE NOT NULL cols, FORCE NULL cols.
                while matches!(
                    rest.get(i).and_then(|t| t.2.word()),
                    Some("quote" | "not" | "null")
                ) {
                    i += 1;
                }
                loop {
                    match rest.get(i).map(|t| &t.2) {
                        Some(Tok::Punct(b'*')) => i += 1,
                        Some(Tok::Word(_) | Tok::Ident(_)) => i += 1,
                        _ => return None,
                    }
                    if rest.get(i).map(|t| &t.2) == Some(&Tok::Punct(b',')) {
                        i += 1;
                    } else {
                        break;
                    }
                }
                out.push(("force_quote".to_owned(), Some(OptValue::List)));
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Buffers reused across rows.
#[derive(Default)]
pub(crate) struct CopyScratch {
    pub field: Vec<u8>,
    pub masked: Vec<u8>,
}

/// Mask one CopyData payload (whole rows, as PostgreSQL sends them). `mask(column, value,
/// out)` decides each non-NULL field (value unescaped / unquoted); `column` is `usize::MAX`
/// for [`CopyFormat::Lines`]. Appends a rewritten CopyData message to `out` and returns true
/// when something changed; appends nothing and returns false otherwise.
pub(crate) fn rewrite_copy_data(
    data: &[u8],
    format: CopyFormat,
    sc: &mut CopyScratch,
    out: &mut BytesMut,
    mut mask: impl FnMut(usize, &[u8], &mut Vec<u8>) -> Masked,
) -> bool {
    let mut at: Option<usize> = None;
    let mut from = 0;
    let mut replace =
        |out: &mut BytesMut, start: usize, end: usize, with: &dyn Fn(&mut BytesMut)| {
            if at.is_none() {
                at = Some(out.len());
                out.put_u8(b'd');
                out.put_u32(0);
            }
            out.extend_from_slice(&data[from..start]);
            with(out);
            from = end;
        };
    let mut pos = 0;
    let mut col = 0;
    while pos < data.len() {
        match format {
            CopyFormat::Binary => return false,
            CopyFormat::Lines => {
                let end = memchr_nl(data, pos);
                if mask(usize::MAX, &data[pos..end], &mut sc.masked) == Masked::Replaced {
                    let m = &sc.masked;
                    replace(out, pos, end, &|o| {
                        o.extend(m.iter().map(|&b| if b == b'\n' { b' ' } else { b }))
                    });
                }
                pos = end + 1;
            }
            CopyFormat::Text { delimiter } => {
                // One field: up to an unescaped delimiter or newline.
                let start = pos;
                let mut escaped = false;
                loop {
                    let Some(i) = data
                        .get(pos..)
                        .and_then(|rest| memchr::memchr3(delimiter, b'\n', b'\\', rest))
                    else {
                        pos = data.len();
                        break;
                    };
                    pos += i;
                    if data[pos] != b'\\' {
                        break;
                    }
                    escaped = true;
                    pos += 2;
                }
                let end = pos.min(data.len());
                let raw = &data[start..end];
                if raw != b"\\N" {
                    let value = if escaped {
                        unescape_text(raw, &mut sc.field);
                        &sc.field[..]
                    } else {
                        raw
                    };
                    match mask(col, value, &mut sc.masked) {
                        Masked::Unchanged => {}
                        Masked::Null => replace(out, start, end, &|o| o.extend_from_slice(b"\\N")),
                        Masked::Replaced => {
                            let m = &sc.masked;
                            replace(out, start, end, &|o| escape_text(m, delimiter, o));
                        }
                    }
                }
                col = if data.get(end) == Some(&b'\n') {
                    0
                } else {
                    col + 1
                };
                pos = end + 1;
            }
            CopyFormat::Csv { delimiter, quote } => {
                let start = pos;
                let quoted = data[pos] == quote;
                let mut doubled = false;
                if quoted {
                    pos += 1;
                    while let Some(i) = data.get(pos..).and_then(|r| memchr::memchr(quote, r)) {
                        pos += i;
                        if data.get(pos + 1) == Some(&quote) {
                            doubled = true;
                            pos += 2;
                            continue;
                        }
                        pos += 1;
                        break;
                    }
                }
                pos = data
                    .get(pos..)
                    .and_then(|r| memchr::memchr2(delimiter, b'\n', r))
                    .map_or(data.len(), |i| pos + i);
                let end = pos.min(data.len());
                let raw = &data[start..end];
                // An unquoted empty field is NULL.
                if !raw.is_empty() {
                    let value = if quoted {
                        let inner = &raw[1..raw.len().saturating_sub(1).max(1)];
                        if doubled {
                            sc.field.clear();
                            let mut k = 0;
                            while k < inner.len() {
                                sc.field.push(inner[k]);
                                k += if inner[k] == quote { 2 } else { 1 };
                            }
                            &sc.field[..]
                        } else {
                            inner
                        }
                    } else {
                        raw
                    };
                    match mask(col, value, &mut sc.masked) {
                        Masked::Unchanged => {}
                        Masked::Null => replace(out, start, end, &|_| {}),
                        Masked::Replaced => {
                            let m = &sc.masked;
                            replace(out, start, end, &|o| {
                                o.put_u8(quote);
                                for &b in m.iter() {
                                    if b == quote {
                                        o.put_u8(quote);
                                    }
                                    o.put_u8(b);
                                }
                                o.put_u8(quote);
                            });
                        }
                    }
                }
                col = if data.get(end) == Some(&b'\n') {
                    0
                } else {
                    col + 1
                };
                pos = end + 1;
            }
        }
    }
    let Some(at) = at else { return false };
    out.extend_from_slice(&data[from..]);
    let len = u32::try_from(out.len() - at - 1).unwrap_or(u32::MAX);
    out[at + 1..at + 5].copy_from_slice(&len.to_be_bytes());
    true
}

pub(crate) mod binary;
mod text;

use text::{escape_text, memchr_nl, unescape_text};

#[cfg(test)]
mod tests;
