//! From query text to classified statements: scan, rebuild each statement as canonical text
//! (literals replaced by `''` or `0`), cross-check `sqlparser`'s tokens against the scanner's,
//! parse, walk.
//!
//! `sqlparser` never sees the original literals, so its own string handling (which differs
//! from PostgreSQL's for E-strings, continuations and standard_conforming_strings) cannot
//! matter, and the result depends only on what the cache key holds.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use super::kinds::{pg_ident_text, table_names, utility_kind};
use super::lexer::{self, Scan, Segment, Tok, TokKind};
use super::limits::{
    MAX_NESTING, MAX_TEXT_BYTES, MAX_TOKENS, SPILL_NESTING, SPILL_STACK, TOO_DEEP, TOO_LARGE,
    nesting_bound,
};
use super::lineage;
use super::walk::analyse;
use super::{Dialect, LexOptions, classify_tsql};
use crate::action::{SqlKind, SqlStatement};

/// Classifies every statement of `text`; see the module documentation for the rules.
pub(crate) fn classify(text: &str, opts: LexOptions) -> Vec<SqlStatement> {
    if opts.dialect == Dialect::TSql {
        return classify_tsql::classify(text, opts);
    }
    if text.len() > MAX_TEXT_BYTES {
        return vec![refused(
            format!("<query text of {} bytes>", text.len()),
            TOO_LARGE,
        )];
    }
    let Some(scan) = lexer::scan(text, opts) else {
        // The scanner cannot tell where statements end, so nothing inside can be trusted.
        return vec![unknown(text.trim().to_owned())];
    };
    // With standard_conforming_strings off, backslashes escape quotes in plain strings, which
    // sqlparser cannot model: it might see statements the server does not, or miss some.
    if !opts.standard_conforming_strings && text.contains('\\') {
        return all_unknown(&scan);
    }
    // In `BEGIN ATOMIC ... END` function bodies `;` does not end the statement, so the
    // scanner's statement boundaries are wrong there.
    let atomic = scan.tokens.windows(2).any(|w| {
        let is = |t: &Tok, s: &str| {
            t.kind == TokKind::Word
                && text
                    .get(t.start..t.end)
                    .is_some_and(|r| r.eq_ignore_ascii_case(s))
        };
        is(&w[0], "begin") && is(&w[1], "atomic")
    });
    if atomic {
        return all_unknown(&scan);
    }
    let mut out = Vec::with_capacity(scan.segments.len());
    for seg in &scan.segments {
        let toks = scan.tokens.get(seg.toks.clone()).unwrap_or_default();
        let bound = if toks.len() > MAX_TOKENS {
            out.push(refused(shape_of(&scan, seg), TOO_LARGE));
            continue;
        } else {
            nesting_bound(text, toks)
        };
        if bound > MAX_NESTING {
            out.push(refused(shape_of(&scan, seg), TOO_DEEP));
            continue;
        }
        // Deep trees are parsed, walked and dropped on a stack sized for them.
        let analysed = if bound > SPILL_NESTING {
            stacker::grow(SPILL_STACK, || classify_segment(text, &scan, seg))
        } else {
            classify_segment(text, &scan, seg)
        };
        match analysed {
            Some(stmt) => out.push(stmt),
            // sqlparser and the scanner disagree about what this text holds.
            None => return all_unknown(&scan),
        }
    }
    out
}

pub(super) fn unknown(shape: String) -> SqlStatement {
    SqlStatement {
        kind: SqlKind::Unknown,
        tables: Vec::new(),
        unbounded: false,
        shape,
        functions: Vec::new(),
        parsed: false,
        refusal: None,
        outputs: None,
    }
}

pub(super) fn refused(shape: String, reason: &'static str) -> SqlStatement {
    SqlStatement {
        refusal: Some(reason),
        ..unknown(shape)
    }
}

pub(super) fn all_unknown(scan: &Scan) -> Vec<SqlStatement> {
    scan.segments
        .iter()
        .map(|s| unknown(shape_of(scan, s)))
        .collect()
}

pub(super) fn shape_of(scan: &Scan, seg: &Segment) -> String {
    scan.fingerprint
        .get(seg.shape.clone())
        .unwrap_or_default()
        .to_owned()
}

/// One statement. `None` means the scanner and `sqlparser` disagree, which condemns the
/// whole text.
fn classify_segment(text: &str, scan: &Scan, seg: &Segment) -> Option<SqlStatement> {
    let shape = shape_of(scan, seg);
    let toks = scan.tokens.get(seg.toks.clone())?;
    let kept = parser_tokens(text, toks);
    let sql = canonical_text(text, &kept);
    let dialect = PostgreSqlDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, &sql).tokenize_with_location() else {
        return Some(fallback(text, toks, shape));
    };
    if !same_tokens(text, &kept, &tokens) {
        return None;
    }
    let parsed = Parser::new(&dialect)
        .with_tokens_with_locations(tokens)
        .parse_statements();
    let stmts = match parsed {
        Ok(s) => s,
        Err(_) => return Some(fallback(text, toks, shape)),
    };
    let [stmt] = stmts.as_slice() else {
        return None;
    };
    let fx = analyse(stmt, Dialect::Postgres);
    Some(SqlStatement {
        kind: fx.kind.unwrap_or(SqlKind::Unknown),
        tables: fx.tables,
        unbounded: fx.unbounded,
        shape,
        functions: fx.functions,
        parsed: true,
        refusal: None,
        outputs: lineage::outputs(stmt),
    })
}

/// The tokens `sqlparser` is shown. `ONLY` (a reserved word in PostgreSQL, so never a
/// name) is left out before a relation: sqlparser would read `FROM ONLY t` as a table
/// named `only` aliased `t`, hiding `t`. Leaving it out changes no effect kind.
fn parser_tokens(text: &str, toks: &[Tok]) -> Vec<Tok> {
    let word = |t: &Tok, w: &str| {
        t.kind == TokKind::Word
            && text
                .get(t.start..t.end)
                .is_some_and(|r| r.eq_ignore_ascii_case(w))
    };
    let mut kept: Vec<Tok> = Vec::with_capacity(toks.len());
    let mut prev: Option<&Tok> = None;
    for t in toks {
        // `FETCH FIRST n ROWS ONLY`, `READ ONLY`.
        let keyword_use =
            prev.is_some_and(|p| word(p, "rows") || word(p, "row") || word(p, "read"));
        if !word(t, "only") || keyword_use {
            kept.push(*t);
        }
        prev = Some(t);
    }
    kept
}

/// The statement rebuilt from its tokens: words lower-cased, literals replaced by `''` or
/// `0`, one space wherever the original had whitespace or a comment, and between any two
/// adjacent non-operator tokens (PostgreSQL separates those anyway, and `t.5` must not
/// become `t0`).
fn canonical_text(text: &str, toks: &[Tok]) -> String {
    let mut out = String::with_capacity(toks.len() * 6);
    let mut prev: Option<&Tok> = None;
    for t in toks {
        let raw = text.get(t.start..t.end).unwrap_or_default();
        if let Some(p) = prev
            && (p.end < t.start || (p.kind != TokKind::Op && t.kind != TokKind::Op))
        {
            out.push(' ');
        }
        match t.kind {
            TokKind::Word | TokKind::SettingName => {
                out.extend(raw.chars().map(|c| c.to_ascii_lowercase()))
            }
            TokKind::Str => out.push_str("''"),
            TokKind::Num => out.push('0'),
            _ => out.push_str(raw),
        }
        prev = Some(t);
    }
    out
}

/// A statement `sqlparser` cannot read: `TABLE name`, administrative utility statements
/// recognised by their first words, otherwise unknown.
fn fallback(text: &str, toks: &[Tok], shape: String) -> SqlStatement {
    let word = |i: usize| {
        toks.get(i)
            .filter(|t| t.kind == TokKind::Word)
            .and_then(|t| text.get(t.start..t.end))
    };
    let (kind, tables) = match table_statement(toks, text) {
        Some(tables) => (Some(SqlKind::Read), tables),
        None => (word(0).and_then(|w| utility_kind(w, word(1))), Vec::new()),
    };
    match kind {
        Some(kind) => SqlStatement {
            kind,
            tables,
            unbounded: false,
            shape,
            functions: Vec::new(),
            parsed: true,
            refusal: None,
            outputs: None,
        },
        None => unknown(shape),
    }
}

/// `TABLE [ONLY] name[.name...] [*]`, the whole statement: the tables it reads.
fn table_statement(toks: &[Tok], text: &str) -> Option<Vec<String>> {
    let raw = |t: &Tok| text.get(t.start..t.end).unwrap_or_default();
    let is_word = |t: &Tok, w: &str| t.kind == TokKind::Word && raw(t).eq_ignore_ascii_case(w);
    let (first, mut rest) = toks.split_first()?;
    if !is_word(first, "table") {
        return None;
    }
    if rest.first().is_some_and(|t| is_word(t, "only")) {
        rest = &rest[1..];
    }
    if rest
        .last()
        .is_some_and(|t| t.kind == TokKind::Op && raw(t) == "*")
    {
        rest = &rest[..rest.len() - 1];
    }
    let mut parts = Vec::new();
    for (i, t) in rest.iter().enumerate() {
        let want_name = i % 2 == 0;
        match t.kind {
            TokKind::Word if want_name => parts.push(pg_ident_text(raw(t), false)),
            TokKind::QuotedIdent if want_name => {
                let inner = raw(t).get(1..raw(t).len().saturating_sub(1))?;
                parts.push(pg_ident_text(&inner.replace("\"\"", "\""), true));
            }
            TokKind::Op if !want_name && raw(t) == "." => {}
            _ => return None,
        }
    }
    if parts.is_empty() || rest.len() % 2 == 0 {
        return None;
    }
    Some(table_names(&parts).collect())
}

/// A token reduced to what must agree between the two tokenizers: words, identifiers,
/// literals (runs of adjacent literals count as one) and parameters. Operators and
/// punctuation are left out because the two tokenizers group them differently.
#[derive(Debug, PartialEq, Eq)]
enum Item<'a> {
    Word(&'a str),
    Quoted(String),
    Literal,
    Param(&'a str),
    Other,
}

fn scanner_items<'a>(text: &'a str, toks: &[Tok]) -> Vec<Item<'a>> {
    let mut items = Vec::new();
    for t in toks {
        let raw = text.get(t.start..t.end).unwrap_or_default();
        let item = match t.kind {
            TokKind::Word => Item::Word(raw),
            TokKind::QuotedIdent => Item::Quoted(
                raw.get(1..raw.len().saturating_sub(1))
                    .unwrap_or_default()
                    .replace("\"\"", "\""),
            ),
            // sqlparser has no U&"..." identifiers; this never matches. `[...]` is T-SQL only.
            TokKind::UnicodeIdent | TokKind::BracketIdent | TokKind::Semi => Item::Other,
            TokKind::Str | TokKind::SettingName | TokKind::Num => Item::Literal,
            TokKind::Param => Item::Param(raw),
            TokKind::Op => continue,
        };
        push_item(&mut items, item);
    }
    items
}

fn parser_items(tokens: &[TokenWithSpan]) -> Vec<Item<'_>> {
    let mut items = Vec::new();
    for t in tokens {
        let item = match &t.token {
            Token::Word(w) => match w.quote_style {
                None => Item::Word(&w.value),
                Some('"') => Item::Quoted(w.value.clone()),
                Some(_) => Item::Other,
            },
            Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_) => Item::Literal,
            Token::Placeholder(p) if p.starts_with('$') => Item::Param(p),
            Token::SemiColon
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::QuoteDelimitedStringLiteral(_)
            | Token::NationalQuoteDelimitedStringLiteral(_) => Item::Other,
            _ => continue,
        };
        push_item(&mut items, item);
    }
    items
}

fn push_item<'a>(items: &mut Vec<Item<'a>>, item: Item<'a>) {
    if item == Item::Literal && items.last() == Some(&Item::Literal) {
        return;
    }
    items.push(item);
}

/// Whether `sqlparser` saw the same words, identifiers, literals and parameters as the
/// scanner. If it did, it cannot have read code as a literal or a literal as code.
fn same_tokens(text: &str, toks: &[Tok], tokens: &[TokenWithSpan]) -> bool {
    let ours = scanner_items(text, toks);
    let theirs = parser_items(tokens);
    ours.len() == theirs.len()
        && ours.iter().zip(&theirs).all(|(a, b)| match (a, b) {
            (Item::Word(x), Item::Word(y)) => x.eq_ignore_ascii_case(y),
            (Item::Other, _) | (_, Item::Other) => false,
            _ => a == b,
        })
}
