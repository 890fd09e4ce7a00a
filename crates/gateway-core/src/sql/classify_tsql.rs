//! T-SQL batches: scan, rebuild the batch as canonical text (literals replaced by `''` or `0`),
//! cross-check `sqlparser`'s tokens against the scanner's, parse statement after statement
//! with `MsSqlDialect`, walk each.
//!
//! T-SQL statements need no `;` between them, so statement boundaries are not lexical: the
//! scanner decides what is code (so which `;` are real), `sqlparser` decides where each
//! statement ends. Each statement it finds is mapped back to the scanner's tokens through its
//! position in the canonical text, which gives its shape.

use std::ops::Range;

use sqlparser::ast::Statement;
use sqlparser::dialect::MsSqlDialect;
use sqlparser::parser::{Parser, ParserOptions};
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use super::classify::{all_unknown, refused, shape_of, unknown};
use super::lexer::{self, Scan, Segment, Tok, TokKind};
use super::limits::{
    MAX_NESTING, MAX_TEXT_BYTES, MAX_TOKENS, SPILL_NESTING, SPILL_STACK, TOO_DEEP, TOO_LARGE,
    nesting_bound,
};
use super::lineage;
use super::walk::analyse;
use super::{Dialect, LexOptions};
use crate::action::{SqlKind, SqlStatement};

/// Classifies every statement of the T-SQL batch `text`; see the module documentation of
/// `sql` for the rules.
pub(crate) fn classify(text: &str, opts: LexOptions) -> Vec<SqlStatement> {
    if text.len() > MAX_TEXT_BYTES {
        return vec![refused(
            format!("<query text of {} bytes>", text.len()),
            TOO_LARGE,
        )];
    }
    let Some(scan) = lexer::scan(text, opts) else {
        return vec![unknown(text.trim().to_owned())];
    };
    if scan.segments.is_empty() {
        return Vec::new();
    }
    // The whole batch is parsed at once, so the token bound applies to all of it.
    if scan.tokens.len() > MAX_TOKENS {
        return vec![refused(
            format!("<query text of {} tokens>", scan.tokens.len()),
            TOO_LARGE,
        )];
    }
    // Expressions never span a `;`, so each part's bound bounds the expressions in it; blocks
    // nest through `sqlparser`'s own recursion limit.
    let bounds: Vec<usize> = scan
        .segments
        .iter()
        .map(|seg| nesting_bound(text, scan.tokens.get(seg.toks.clone()).unwrap_or_default()))
        .collect();
    if bounds.iter().any(|&b| b > MAX_NESTING) {
        return scan
            .segments
            .iter()
            .zip(&bounds)
            .map(|(seg, &b)| {
                if b > MAX_NESTING {
                    refused(shape_of(&scan, seg), TOO_DEEP)
                } else {
                    unknown(shape_of(&scan, seg))
                }
            })
            .collect();
    }
    // Deep trees are parsed, walked and dropped on a stack sized for them.
    let analysed = if bounds.iter().any(|&b| b > SPILL_NESTING) {
        stacker::grow(SPILL_STACK, || classify_batch(text, &scan))
    } else {
        classify_batch(text, &scan)
    };
    // `None`: sqlparser and the scanner disagree, or part of the batch cannot be read.
    analysed.unwrap_or_else(|| all_unknown(&scan))
}

/// What parsing a run of tokens gave.
enum Parsed {
    Statements(Vec<SqlStatement>),
    /// `sqlparser` cannot parse it.
    Unparsed,
    /// `sqlparser` saw other tokens than the scanner: nothing in the text can be trusted.
    Mismatch,
}

/// The whole batch, or when `sqlparser` cannot parse it, each `;`-separated part on its own
/// (a part it cannot parse may still be one of the utility statements it does not know).
fn classify_batch(text: &str, scan: &Scan) -> Option<Vec<SqlStatement>> {
    match parse_tokens(text, scan, 0..scan.tokens.len()) {
        Parsed::Statements(v) => return Some(v),
        Parsed::Mismatch => return None,
        Parsed::Unparsed => {}
    }
    let mut out = Vec::new();
    for seg in &scan.segments {
        let parsed = if scan.segments.len() == 1 {
            Parsed::Unparsed
        } else {
            parse_tokens(text, scan, seg.toks.clone())
        };
        match parsed {
            Parsed::Statements(v) => out.extend(v),
            Parsed::Mismatch => return None,
            Parsed::Unparsed => out.push(utility(text, scan, seg)?),
        }
    }
    Some(out)
}

/// Parses the scanner's tokens `range` (whole statements, possibly with `;` between them).
fn parse_tokens(text: &str, scan: &Scan, range: Range<usize>) -> Parsed {
    let Some(toks) = scan.tokens.get(range.clone()) else {
        return Parsed::Mismatch;
    };
    let (sql, locations) = canonical_text(text, toks);
    let dialect = MsSqlDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, &sql).tokenize_with_location() else {
        return Parsed::Unparsed;
    };
    if !same_tokens(text, toks, &tokens) {
        return Parsed::Mismatch;
    }
    let options = ParserOptions {
        require_semicolon_stmt_delimiter: false,
        ..ParserOptions::default()
    };
    let mut parser = Parser::new(&dialect)
        .with_options(options)
        .with_tokens_with_locations(tokens);
    // Each statement with the index (in `toks`) of its first token.
    let mut found: Vec<(usize, Statement)> = Vec::new();
    loop {
        while parser.consume_token(&Token::SemiColon) {}
        let next = parser.peek_token_ref();
        if next.token == Token::EOF {
            break;
        }
        let at = (next.span.start.line, next.span.start.column);
        let Ok(first) = locations.binary_search(&at) else {
            return Parsed::Mismatch;
        };
        if found.last().is_some_and(|(prev, _)| *prev >= first) {
            return Parsed::Mismatch;
        }
        let Ok(stmt) = parser.parse_statement() else {
            return Parsed::Unparsed;
        };
        found.push((first, stmt));
    }
    let mut out = Vec::with_capacity(found.len());
    for (k, (first, stmt)) in found.iter().enumerate() {
        // A statement runs to the next one's first token, less the `;` between them.
        let mut end = found.get(k + 1).map_or(toks.len(), |(next, _)| *next);
        while end > *first && toks.get(end - 1).is_some_and(|t| t.kind == TokKind::Semi) {
            end -= 1;
        }
        let shape = shape_of_tokens(scan, range.start + first..range.start + end);
        let fx = analyse(stmt, Dialect::TSql);
        out.push(SqlStatement {
            kind: fx.kind.unwrap_or(SqlKind::Unknown),
            tables: fx.tables,
            unbounded: fx.unbounded,
            shape,
            functions: fx.functions,
            parsed: true,
            refusal: None,
            outputs: lineage::outputs(stmt),
        });
    }
    Parsed::Statements(out)
}

/// The shape of the scanner's tokens `range` (non-empty), from the fingerprint.
fn shape_of_tokens(scan: &Scan, range: Range<usize>) -> String {
    let start = scan.shapes.get(range.start).map(|r| r.start);
    let end = range
        .end
        .checked_sub(1)
        .and_then(|last| scan.shapes.get(last))
        .map(|r| r.end);
    match (start, end) {
        (Some(s), Some(e)) => scan.fingerprint.get(s..e).unwrap_or_default().to_owned(),
        _ => String::new(),
    }
}

/// The tokens rebuilt as text for `sqlparser`: words lower-cased, literals replaced by `''` or
/// `0`, one space wherever the original had whitespace or a comment, and between any two
/// adjacent non-operator tokens. Also the position (line, column, as `sqlparser` counts them)
/// where each token starts.
fn canonical_text(text: &str, toks: &[Tok]) -> (String, Vec<(u64, u64)>) {
    let mut out = String::with_capacity(toks.len() * 6);
    let mut locations = Vec::with_capacity(toks.len());
    let (mut line, mut column) = (1u64, 1u64);
    let mut prev: Option<&Tok> = None;
    for t in toks {
        let raw = text.get(t.start..t.end).unwrap_or_default();
        if let Some(p) = prev
            && (p.end < t.start || (p.kind != TokKind::Op && t.kind != TokKind::Op))
        {
            out.push(' ');
            column += 1;
        }
        locations.push((line, column));
        let lowered;
        let piece = match t.kind {
            TokKind::Word => {
                lowered = raw.to_ascii_lowercase();
                lowered.as_str()
            }
            TokKind::Str => "''",
            TokKind::Num => "0",
            _ => raw,
        };
        for c in piece.chars() {
            if c == '\n' {
                line += 1;
                column = 1;
            } else {
                column += 1;
            }
        }
        out.push_str(piece);
        prev = Some(t);
    }
    (out, locations)
}

/// A token reduced to what must agree between the two tokenizers. Operators and punctuation
/// are left out because the two tokenizers group them differently.
#[derive(Debug, PartialEq, Eq)]
enum Item<'a> {
    Word(&'a str),
    Quoted(char, String),
    Literal,
    Semi,
    Other,
}

fn push_item<'a>(items: &mut Vec<Item<'a>>, item: Item<'a>) {
    if item == Item::Literal && items.last() == Some(&Item::Literal) {
        return;
    }
    items.push(item);
}

fn scanner_items<'a>(text: &'a str, toks: &[Tok]) -> Vec<Item<'a>> {
    let mut items = Vec::new();
    for t in toks {
        let raw = text.get(t.start..t.end).unwrap_or_default();
        let inner = || raw.get(1..raw.len().saturating_sub(1)).unwrap_or_default();
        let item = match t.kind {
            TokKind::Word => Item::Word(raw),
            TokKind::QuotedIdent => Item::Quoted('"', inner().replace("\"\"", "\"")),
            TokKind::BracketIdent => Item::Quoted('[', inner().replace("]]", "]")),
            TokKind::Str | TokKind::SettingName | TokKind::Num => Item::Literal,
            TokKind::Semi => Item::Semi,
            TokKind::UnicodeIdent | TokKind::Param => Item::Other,
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
                Some(q) => Item::Quoted(q, w.value.clone()),
            },
            // The canonical text holds no other literals.
            Token::Number(..) | Token::SingleQuotedString(_) => Item::Literal,
            Token::SemiColon => Item::Semi,
            Token::Whitespace(_)
            | Token::Period
            | Token::Comma
            | Token::LParen
            | Token::RParen
            | Token::Eq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::Ampersand
            | Token::Pipe
            | Token::Caret
            | Token::Tilde
            | Token::ExclamationMark
            | Token::Colon
            | Token::DoubleColon
            | Token::EOF => continue,
            // Any other token (a placeholder, a string of another kind, an operator only some
            // other dialect has) is not something the canonical text should produce.
            _ => Item::Other,
        };
        push_item(&mut items, item);
    }
    items
}

/// Whether `sqlparser` saw the same words, identifiers, literals and `;` as the scanner. If it
/// did, it cannot have read code as a literal or a literal as code.
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

/// A `;`-separated part `sqlparser` cannot parse that is exactly one utility statement:
/// `RECONFIGURE [WITH OVERRIDE]`, `SHUTDOWN [WITH NOWAIT]`, `DBCC name [( args )] [WITH
/// option [, option]...]` (`Admin`), `BEGIN|COMMIT|ROLLBACK|SAVE TRAN[SACTION] [name]`
/// (`Session`; sqlparser reads the forms without a name).
fn utility(text: &str, scan: &Scan, seg: &Segment) -> Option<SqlStatement> {
    let toks = scan.tokens.get(seg.toks.clone())?;
    let raw = |t: &Tok| text.get(t.start..t.end).unwrap_or_default();
    let word = |i: usize| {
        toks.get(i)
            .filter(|t| t.kind == TokKind::Word)
            .map(|t| raw(t).to_ascii_lowercase())
    };
    let is = |i: usize, w: &str| word(i).as_deref() == Some(w);
    let op = |i: usize, c: &str| {
        toks.get(i)
            .is_some_and(|t| t.kind == TokKind::Op && raw(t) == c)
    };
    let named = |i: usize| {
        toks.get(i)
            .is_some_and(|t| matches!(t.kind, TokKind::Word | TokKind::BracketIdent))
    };
    let n = toks.len();
    let kind = if is(0, "reconfigure") && (n == 1 || (n == 3 && is(1, "with") && is(2, "override")))
        || is(0, "shutdown") && (n == 1 || (n == 3 && is(1, "with") && is(2, "nowait")))
    {
        SqlKind::Admin
    } else if ["begin", "commit", "rollback", "save"]
        .iter()
        .any(|w| is(0, w))
        && (is(1, "tran") || is(1, "transaction"))
        && (n == 2 || n == 3 && named(2))
    {
        SqlKind::Session
    } else if is(0, "dbcc") && word(1).is_some() {
        let mut i = 2;
        if op(i, "(") {
            i += 1;
            // Names and literals only: no nested parentheses, so no subquery or statement.
            while toks.get(i).is_some_and(|t| match t.kind {
                TokKind::Word | TokKind::QuotedIdent | TokKind::BracketIdent => true,
                TokKind::Str | TokKind::Num => true,
                TokKind::Op => matches!(raw(t), "," | "." | "-" | "="),
                _ => false,
            }) {
                i += 1;
            }
            if !op(i, ")") {
                return None;
            }
            i += 1;
        }
        if i < n {
            if !is(i, "with") {
                return None;
            }
            i += 1;
            loop {
                word(i)?;
                i += 1;
                if i == n {
                    break;
                }
                if !op(i, ",") {
                    return None;
                }
                i += 1;
            }
        }
        SqlKind::Admin
    } else {
        return None;
    };
    Some(SqlStatement {
        kind,
        tables: Vec::new(),
        unbounded: false,
        shape: shape_of(scan, seg),
        functions: Vec::new(),
        parsed: true,
        refusal: None,
        outputs: None,
    })
}
