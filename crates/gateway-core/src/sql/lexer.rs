//! A single-pass scanner that agrees with PostgreSQL's `scan.l` on where comments, strings,
//! quoted identifiers, dollar quotes, numbers and statements begin and end.
//!
//! It is the authority on statement boundaries and on what is code versus literal: the
//! classification cache is keyed by its output, and `sqlparser`'s view of each statement is
//! checked against it token by token. Anything it cannot place with certainty (unterminated
//! constructs, text whose meaning differs between PostgreSQL versions) makes it give up.
//!
//! T-SQL text is scanned by `lexer_tsql` instead; the token types, segmenting and output
//! written here are shared.

use std::ops::Range;

use super::{Dialect, LexOptions, lexer_tsql};

/// The class of one scanned token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokKind {
    /// Keyword or unquoted identifier.
    Word,
    /// `"..."` identifier.
    QuotedIdent,
    /// `[...]` identifier (T-SQL only).
    BracketIdent,
    /// `U&"..."` identifier.
    UnicodeIdent,
    /// String of any kind (plain, E, N, U&, B, X, dollar-quoted).
    Str,
    /// A plain `'...'` string that is the first argument of `set_config(`, spelt like a
    /// setting name (ASCII letters, digits, `_`, `.`): kept, lower-cased, in the shape and the
    /// cache key, so the classifier can judge the call as `SET` of that name.
    SettingName,
    /// Number.
    Num,
    /// `$n` parameter.
    Param,
    /// Top-level `;`.
    Semi,
    /// One operator or punctuation character.
    Op,
}

/// One token: its class and byte range in the scanned text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tok {
    pub kind: TokKind,
    pub start: usize,
    pub end: usize,
}

/// One non-empty `;`-separated statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    /// Index range into [`Scan::tokens`].
    pub toks: Range<usize>,
    /// Byte range of the statement in the scanned text (first to last token).
    pub text: Range<usize>,
    /// Byte range of the statement's shape in [`Scan::fingerprint`].
    pub shape: Range<usize>,
}

/// The full result of scanning a query text.
#[derive(Clone, Debug)]
pub(crate) struct Scan {
    pub fingerprint: String,
    pub tokens: Vec<Tok>,
    /// Byte range of each token's text in `fingerprint`, parallel to `tokens`.
    pub shapes: Vec<Range<usize>>,
    pub segments: Vec<Segment>,
}

/// Normalised text only (the hot path: one allocation).
pub(crate) fn fingerprint(text: &str, opts: LexOptions) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    scan_into(text, opts, &mut out, Emit::Shape, |_, _| {})?;
    Some(out)
}

/// The cache key: the fingerprint with literals written as `\x01` (string) or `\x02`
/// (number) instead of `?`, so it also tells a literal from a `?` operator and a string from
/// a number. Control characters never reach the output otherwise (the scanner refuses them).
pub(crate) fn cache_key(text: &str, opts: LexOptions) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    scan_into(text, opts, &mut out, Emit::Key, |_, _| {})?;
    Some(out)
}

/// Normalised text plus tokens and statement segments.
pub(crate) fn scan(text: &str, opts: LexOptions) -> Option<Scan> {
    let mut out = String::with_capacity(text.len());
    let mut tokens = Vec::new();
    let mut shapes = Vec::new();
    let mut segments = Vec::new();
    // Start of the open segment: token index, and the first token's text and shape offsets.
    let mut open: Option<(usize, usize, usize)> = None;
    let mut last: (usize, usize) = (0, 0);
    scan_into(text, opts, &mut out, Emit::Shape, |tok, shape| {
        if tok.kind == TokKind::Semi {
            if let Some((t0, x0, s0)) = open.take() {
                segments.push(Segment {
                    toks: t0..tokens.len(),
                    text: x0..last.0,
                    shape: s0..last.1,
                });
            }
        } else {
            if open.is_none() {
                open = Some((tokens.len(), tok.start, shape.start));
            }
            last = (tok.end, shape.end);
        }
        tokens.push(tok);
        shapes.push(shape);
    })?;
    if let Some((t0, x0, s0)) = open {
        segments.push(Segment {
            toks: t0..tokens.len(),
            text: x0..last.0,
            shape: s0..last.1,
        });
    }
    Some(Scan {
        fingerprint: out,
        tokens,
        shapes,
        segments,
    })
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// Dollar-quote tag characters: identifier characters without `$`.
fn is_tag_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit()
}

/// Whitespace PostgreSQL accepts in every supported version (`\v` only since 16, so it is
/// refused rather than guessed).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')
}

/// How the body of a quoted literal is scanned.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    /// `'...'` with `''`; backslash escapes too when `backslash` is set.
    Standard { backslash: bool },
    /// `B'...'` / `X'...'`: no escapes at all, `''` ends the literal.
    Bits,
}

/// How literals are written to the output.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Emit {
    Shape,
    Key,
}

/// Scans `text`, appending the fingerprint to `out` and reporting each token with its
/// range in `out`; `None` if the text cannot be scanned safely.
fn scan_into(
    text: &str,
    opts: LexOptions,
    out: &mut String,
    emit: Emit,
    mut sink: impl FnMut(Tok, Range<usize>),
) -> Option<()> {
    if opts.dialect == Dialect::TSql {
        return lexer_tsql::scan_into(text, out, emit, sink);
    }
    let b = text.as_bytes();
    let n = b.len();
    let mut i = 0;
    let mut space = false;
    let plain_backslash = !opts.standard_conforming_strings;
    let mut set_config = SetConfig::Idle;

    while i < n {
        let c = b[i];
        let start = i;
        let kind;
        if is_space(c) {
            space = true;
            i += 1;
            continue;
        }
        if c == b'-' && b.get(i + 1) == Some(&b'-') {
            i = skip_line_comment(b, i);
            space = true;
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i = skip_block_comment(b, i)?;
            space = true;
            continue;
        }
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        let shape_start = out.len();
        let next = b.get(i + 1).copied();
        match c {
            b'\'' => {
                i = scan_string(
                    b,
                    i + 1,
                    Quote::Standard {
                        backslash: plain_backslash,
                    },
                )?;
                kind = TokKind::Str;
            }
            b'e' | b'E' if next == Some(b'\'') => {
                i = scan_string(b, i + 2, Quote::Standard { backslash: true })?;
                kind = TokKind::Str;
            }
            // N'...' is an ordinary string after the N, so it follows standard_conforming_strings.
            b'n' | b'N' if next == Some(b'\'') => {
                i = scan_string(
                    b,
                    i + 2,
                    Quote::Standard {
                        backslash: plain_backslash,
                    },
                )?;
                kind = TokKind::Str;
            }
            b'b' | b'B' | b'x' | b'X' if next == Some(b'\'') => {
                i = scan_string(b, i + 2, Quote::Bits)?;
                kind = TokKind::Str;
            }
            // U&'...' never treats backslash as a quote escape at the lexical level.
            b'u' | b'U' if next == Some(b'&') && b.get(i + 2) == Some(&b'\'') => {
                i = scan_string(b, i + 3, Quote::Standard { backslash: false })?;
                kind = TokKind::Str;
            }
            b'u' | b'U' if next == Some(b'&') && b.get(i + 2) == Some(&b'"') => {
                i = scan_quoted_ident(b, i + 3)?;
                kind = TokKind::UnicodeIdent;
            }
            b'"' => {
                i = scan_quoted_ident(b, i + 1)?;
                kind = TokKind::QuotedIdent;
            }
            b'$' => {
                let (end, k) = scan_dollar(text, i)?;
                i = end;
                kind = k;
            }
            b'0'..=b'9' => {
                i = scan_number(b, i)?;
                kind = TokKind::Num;
            }
            b'.' if next.is_some_and(|d| d.is_ascii_digit()) => {
                i = scan_number(b, i)?;
                kind = TokKind::Num;
            }
            _ if is_ident_start(c) => {
                i += 1;
                while i < n && is_ident_cont(b[i]) {
                    i += 1;
                }
                kind = TokKind::Word;
            }
            b';' => {
                i += 1;
                kind = TokKind::Semi;
            }
            // Any other printable ASCII is an operator or punctuation character; comment starts
            // were handled above, so `+--x` yields `+` and then a comment, as in PostgreSQL.
            0x21..=0x7e => {
                i += 1;
                kind = TokKind::Op;
            }
            // NUL, vertical tab and other control characters: refuse.
            _ => return None,
        }
        let raw = text.get(start..i)?;
        let kind = set_config.step(kind, raw);
        push_token(out, raw, kind, emit);
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

/// Appends one token's shape (or key) text: words lower-cased (ASCII only), literals replaced.
pub(super) fn push_token(out: &mut String, raw: &str, kind: TokKind, emit: Emit) {
    match kind {
        TokKind::Word => {
            for ch in raw.chars() {
                out.push(ch.to_ascii_lowercase());
            }
        }
        TokKind::SettingName => {
            for ch in raw.chars() {
                out.push(ch.to_ascii_lowercase());
            }
        }
        TokKind::Str | TokKind::Num if emit == Emit::Shape => out.push('?'),
        TokKind::Str => out.push('\x01'),
        TokKind::Num => out.push('\x02'),
        _ => out.push_str(raw),
    }
}

/// Where the scanner stands on the way to `set_config('name'`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SetConfig {
    Idle,
    /// The last token was the word `set_config`.
    Name,
    /// The last two tokens were `set_config (`.
    Paren,
}

impl SetConfig {
    /// Advances past one token; the token's kind, [`TokKind::SettingName`] for a literal
    /// setting name right after `set_config (`.
    fn step(&mut self, kind: TokKind, raw: &str) -> TokKind {
        let (next, kind) = match (*self, kind) {
            (_, TokKind::Word) if raw.eq_ignore_ascii_case("set_config") => (SetConfig::Name, kind),
            (SetConfig::Name, TokKind::Op) if raw == "(" => (SetConfig::Paren, kind),
            (SetConfig::Paren, TokKind::Str) if is_setting_literal(raw) => {
                (SetConfig::Idle, TokKind::SettingName)
            }
            _ => (SetConfig::Idle, kind),
        };
        *self = next;
        kind
    }
}

/// `'name'` or `'ext.name'`: a plain literal whose text needs no escaping and could be a
/// setting's name. Anything else (E-strings, dollar quotes, continuations, quotes or
/// backslashes inside) stays an ordinary literal.
fn is_setting_literal(raw: &str) -> bool {
    let Some(body) = raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) else {
        return false;
    };
    body.split('.').all(|part| {
        part.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

/// `--` to the end of the line; returns the index of the newline (or the end).
fn skip_line_comment(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
        i += 1;
    }
    i
}

/// Nested `/* ... */`; returns the index after the closing `*/`.
pub(super) fn skip_block_comment(b: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 1usize;
    i += 2;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Some(i);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// Scans a quoted literal body starting after the opening quote; returns the index after the
/// closing quote, following PostgreSQL's continuation rule: a literal continues, in the same
/// mode, when the next quote is separated from it only by whitespace holding a newline (and
/// `--` comments).
fn scan_string(b: &[u8], mut i: usize, quote: Quote) -> Option<usize> {
    loop {
        let c = *b.get(i)?;
        match (c, quote) {
            (b'\\', Quote::Standard { backslash: true }) => {
                // The escaped byte is consumed whatever it is; a trailing backslash is unterminated.
                b.get(i + 1)?;
                i += 2;
            }
            (b'\'', Quote::Standard { .. }) if b.get(i + 1) == Some(&b'\'') => i += 2,
            (b'\'', _) => {
                i += 1;
                match continuation(b, i) {
                    Some(next) => i = next,
                    None => return Some(i),
                }
            }
            _ => i += 1,
        }
    }
}

/// If a string continuation starts at `i`, the index just after its opening quote.
fn continuation(b: &[u8], mut i: usize) -> Option<usize> {
    let mut newline = false;
    while i < b.len() {
        match b[i] {
            b'\n' | b'\r' => {
                newline = true;
                i += 1;
            }
            b' ' | b'\t' | b'\x0c' => i += 1,
            b'-' if b.get(i + 1) == Some(&b'-') => i = skip_line_comment(b, i),
            b'\'' if newline => return Some(i + 1),
            _ => return None,
        }
    }
    None
}

/// `"..."` with `""`; returns the index after the closing quote. Empty identifiers are an
/// error in PostgreSQL, so they are refused.
fn scan_quoted_ident(b: &[u8], mut i: usize) -> Option<usize> {
    let body = i;
    loop {
        match *b.get(i)? {
            b'"' if b.get(i + 1) == Some(&b'"') => i += 2,
            b'"' => return (i > body).then_some(i + 1),
            _ => i += 1,
        }
    }
}

/// `$n` parameter or `$tag$ ... $tag$` string starting at `i` (which holds `$`).
fn scan_dollar(text: &str, i: usize) -> Option<(usize, TokKind)> {
    let b = text.as_bytes();
    let mut j = i + 1;
    let first = *b.get(j)?;
    if first.is_ascii_digit() {
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        // `$1abc` is an error in PostgreSQL 16 and two tokens before it: refuse.
        if b.get(j).is_some_and(|&c| is_ident_cont(c)) {
            return None;
        }
        return Some((j, TokKind::Param));
    }
    if first != b'$' {
        if !is_ident_start(first) {
            return None;
        }
        while j < b.len() && is_tag_cont(b[j]) {
            j += 1;
        }
        if b.get(j) != Some(&b'$') {
            // `$abc` without a closing `$` is a lone `$` in PostgreSQL: a syntax error.
            return None;
        }
    }
    let delim = text.get(i..=j)?;
    let body = j + 1;
    let close = text.get(body..)?.find(delim)?;
    Some((body + close + delim.len(), TokKind::Str))
}

/// A numeric literal starting at `i` (a digit, or `.` followed by a digit).
fn scan_number(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |b: &[u8], mut i: usize| {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    if b[i] == b'.' {
        i = digits(b, i + 1);
    } else {
        i = digits(b, i);
        if b.get(i) == Some(&b'.') {
            // `1..2` has special rules in PostgreSQL's scanner: refuse.
            if b.get(i + 1) == Some(&b'.') {
                return None;
            }
            i = digits(b, i + 1);
        }
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
    // Trailing identifier characters (`1abc`, `0x1F`, `1_000`) mean different things in
    // different PostgreSQL versions: refuse.
    if b.get(i).is_some_and(|&c| is_ident_cont(c)) {
        return None;
    }
    Some(i)
}
