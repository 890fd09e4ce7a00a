//! A single-pass scanner for T-SQL (SQL Server, Azure SQL) that agrees with SQL Server on where
//! comments, strings, quoted identifiers and numbers begin and end.
//!
//! It plays the part `lexer` plays for PostgreSQL: the classification cache is keyed by its
//! output and `sqlparser`'s view of the batch is checked against it token by token. It gives
//! up (the text is `Unknown`) on anything it cannot place with certainty: unterminated strings,
//! identifiers and comments, a lone carriage return in a `--` comment, `$` (money and
//! pseudo-columns), `{`/`}` (ODBC escapes), `?`, `` ` ``, `\` and other characters T-SQL has
//! no token for, non-ASCII text outside literals, quoted identifiers and comments, NUL anywhere,
//! a number run into a name (`1abc`, `0x1G`, `1e`), a lone `@` or `#`, and a line that starts
//! with `GO` (a client-side batch separator the server never sees as one).

use std::ops::Range;

use super::lexer::{Emit, Tok, TokKind, push_token, skip_block_comment};

/// First character of a regular identifier (ASCII only: the set of Unicode letters SQL Server
/// accepts is not the one Rust knows, so other letters are refused).
fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

/// Later characters of a regular identifier, variable or temporary-table name.
fn is_ident_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || matches!(b, b'@' | b'#' | b'$')
}

/// Operator and punctuation characters of T-SQL; anything else outside a token is refused.
fn is_op(b: u8) -> bool {
    matches!(
        b,
        b'(' | b')'
            | b','
            | b'.'
            | b'='
            | b'<'
            | b'>'
            | b'!'
            | b'+'
            | b'-'
            | b'*'
            | b'/'
            | b'%'
            | b'&'
            | b'|'
            | b'^'
            | b'~'
            | b':'
    )
}

/// Scans T-SQL `text`, appending the fingerprint to `out` and reporting each token with its
/// range in `out`; `None` if the text cannot be scanned safely.
pub(super) fn scan_into(
    text: &str,
    out: &mut String,
    emit: Emit,
    mut sink: impl FnMut(Tok, Range<usize>),
) -> Option<()> {
    let b = text.as_bytes();
    if memchr::memchr(0, b).is_some() {
        return None;
    }
    let n = b.len();
    let mut i = 0;
    let mut space = false;
    // Whether a line break came since the previous token: a `GO` there is a batch separator.
    let mut line_start = true;

    while i < n {
        let c = b[i];
        let start = i;
        let next = b.get(i + 1).copied();
        match c {
            b' ' | b'\t' => {
                space = true;
                i += 1;
                continue;
            }
            b'\n' | b'\r' => {
                space = true;
                line_start = true;
                i += 1;
                continue;
            }
            b'-' if next == Some(b'-') => {
                i = skip_line_comment(b, i)?;
                space = true;
                continue;
            }
            b'/' if next == Some(b'*') => {
                i = skip_block_comment(b, i)?;
                if b.get(start..i).is_some_and(|c| c.contains(&b'\n')) {
                    line_start = true;
                }
                space = true;
                continue;
            }
            _ => {}
        }
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        let kind = match c {
            b'\'' => {
                i = scan_delimited(b, i + 1, b'\'', true)?;
                TokKind::Str
            }
            b'n' | b'N' if next == Some(b'\'') => {
                i = scan_delimited(b, i + 2, b'\'', true)?;
                TokKind::Str
            }
            b'[' => {
                i = scan_delimited(b, i + 1, b']', false)?;
                TokKind::BracketIdent
            }
            b'"' => {
                i = scan_delimited(b, i + 1, b'"', false)?;
                TokKind::QuotedIdent
            }
            b'0'..=b'9' => {
                i = scan_number(b, i)?;
                TokKind::Num
            }
            b'.' if next.is_some_and(|d| d.is_ascii_digit()) => {
                i = scan_number(b, i)?;
                TokKind::Num
            }
            // `@var`, `@@global`, `#temp`, `##global_temp`.
            b'@' | b'#' => {
                i += if next == Some(c) { 2 } else { 1 };
                if !b.get(i).is_some_and(|&d| is_ident_start(d)) {
                    return None;
                }
                i = word_end(b, i);
                TokKind::Word
            }
            _ if is_ident_start(c) => {
                i = word_end(b, i);
                if line_start && b.get(start..i)?.eq_ignore_ascii_case(b"go") {
                    return None;
                }
                TokKind::Word
            }
            b';' => {
                i += 1;
                TokKind::Semi
            }
            _ if is_op(c) => {
                i += 1;
                TokKind::Op
            }
            _ => return None,
        };
        line_start = false;
        let shape_start = out.len();
        push_token(out, text.get(start..i)?, kind, emit);
        sink(
            Tok {
                kind,
                start,
                end: i,
            },
            shape_start..out.len(),
        );
    }
    Some(())
}

fn word_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_ident_cont(b[i]) {
        i += 1;
    }
    i
}

/// `--` to the end of the line (a line feed); returns the index of the line feed or the end.
/// A lone carriage return inside is refused: whether it ends the comment is not certain.
fn skip_line_comment(b: &[u8], mut i: usize) -> Option<usize> {
    while i < b.len() && b[i] != b'\n' {
        if b[i] == b'\r' && b.get(i + 1) != Some(&b'\n') {
            return None;
        }
        i += 1;
    }
    Some(i)
}

/// A literal or identifier body after its opening delimiter, closed by `close`, where a doubled
/// `close` stands for itself; returns the index after the closing delimiter. There are no
/// backslash escapes and no continuations. Empty identifiers are an error, so refused.
fn scan_delimited(b: &[u8], mut i: usize, close: u8, empty_ok: bool) -> Option<usize> {
    let body = i;
    loop {
        let c = *b.get(i)?;
        if c != close {
            i += 1;
        } else if b.get(i + 1) == Some(&close) {
            i += 2;
        } else {
            return (empty_ok || i > body).then_some(i + 1);
        }
    }
}

/// A number starting at `i` (a digit, or `.` followed by a digit): `12`, `1.5`, `.5`, `5.`,
/// `1.5e3`, `1E-3`, or a binary literal `0x1F` (also `0x`, the empty binary value).
fn scan_number(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |b: &[u8], mut i: usize| {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    if b[i] == b'0' && matches!(b.get(i + 1), Some(b'x' | b'X')) {
        i += 2;
        while i < b.len() && b[i].is_ascii_hexdigit() {
            i += 1;
        }
    } else {
        if b[i] != b'.' {
            i = digits(b, i);
        }
        if b.get(i) == Some(&b'.') {
            i = digits(b, i + 1);
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            let mut j = i + 1;
            if matches!(b.get(j), Some(b'+' | b'-')) {
                j += 1;
            }
            if !b.get(j).is_some_and(|d| d.is_ascii_digit()) {
                return None;
            }
            i = digits(b, j);
        }
    }
    // `1abc`, `0x1G`, `1.2.3`: refuse rather than guess how SQL Server splits them.
    if b.get(i).is_some_and(|&c| is_ident_cont(c) || c == b'.') {
        return None;
    }
    Some(i)
}
