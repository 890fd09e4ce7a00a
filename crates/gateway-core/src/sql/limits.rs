//! Bounds on what the classifier analyses, so that no statement can exhaust the stack,
//! memory or time of the process that classifies it.
//!
//! `sqlparser` builds chains of infix and postfix operators (`1+1+…`, `a AND b AND …`,
//! `x::t::t…`) in a loop, so its parser is not deep, but the tree is: one level per operator,
//! and walking or dropping that tree recurses once per level. Nesting through brackets
//! recurses in the parser itself, which refuses more than 50 levels (the statement is then
//! `Unknown`).
//!
//! Before parsing, the scanner's tokens give a bound on the tree's depth ([`nesting_bound`]).
//! A statement whose bound exceeds [`MAX_NESTING`], or with more than [`MAX_TOKENS`]
//! tokens, is not parsed: it is refused with a reason, whatever policy says. One whose bound
//! exceeds [`SPILL_NESTING`] is parsed, walked and dropped on a stack of its
//! own, sized for the largest bound allowed; all others stay on the caller's stack.

use super::lexer::{Tok, TokKind};

/// Nesting bound above which a statement is refused unanalysed. PostgreSQL itself gives up
/// (`stack depth limit exceeded`) on operator chains a few times longer.
pub(crate) const MAX_NESTING: usize = 10_000;

/// Tokens (words, literals, operator characters, …) above which a statement is refused
/// unanalysed: about 4 MB of typical SQL.
pub(crate) const MAX_TOKENS: usize = 1_000_000;

/// Query text above which nothing is scanned: the whole text is one refused statement. It
/// bounds the scanner's memory (a token per byte at worst).
pub(crate) const MAX_TEXT_BYTES: usize = 4 << 20;

/// Nesting bound above which analysis moves to a stack of its own.
pub(crate) const SPILL_NESTING: usize = 192;

/// Size of that stack: room for [`MAX_NESTING`] levels of parse, walk and drop even in an
/// unoptimised build. Only the pages a statement touches are ever committed.
pub(crate) const SPILL_STACK: usize = 512 << 20;

/// The reason given for a statement refused by these bounds.
pub(crate) const TOO_DEEP: &str = "statement too complex to analyse: its expressions nest \
     deeper than the gateway's limit (10000 levels); split it or simplify it";

/// The reason given for a statement refused for its size.
pub(crate) const TOO_LARGE: &str = "statement too large to analyse: more than 4 MiB or \
     1000000 tokens; split it into smaller statements";

/// An upper bound, up to a constant factor, on the depth of the syntax tree of the statement
/// made of `toks`.
///
/// Commas separate siblings, which share a level. Within one comma-separated item any token
/// may nest under any other (operator chains do), so an item costs its token count, a
/// bracketed group counting as one token, plus the cost of its costliest group; a group
/// costs its costliest item.
pub(crate) fn nesting_bound(text: &str, toks: &[Tok]) -> usize {
    #[derive(Default)]
    struct Group {
        /// Cost of the costliest finished item.
        best: usize,
        /// Tokens of the current item.
        tokens: usize,
        /// Cost of the costliest group inside the current item.
        inner: usize,
    }
    impl Group {
        fn finish_item(&mut self) {
            self.best = self.best.max(self.tokens + self.inner);
            self.tokens = 0;
            self.inner = 0;
        }
    }
    let mut open: Vec<Group> = Vec::new();
    let mut cur = Group::default();
    for t in toks {
        let op = match t.kind {
            TokKind::Op => text.as_bytes().get(t.start).copied(),
            _ => None,
        };
        match op {
            Some(b'(' | b'[') => open.push(std::mem::take(&mut cur)),
            Some(b')' | b']') => {
                cur.finish_item();
                let cost = cur.best + 1;
                // An unbalanced close is left to the parser, which rejects it.
                cur = open.pop().unwrap_or_default();
                cur.tokens += 1;
                cur.inner = cur.inner.max(cost);
            }
            Some(b',') => cur.finish_item(),
            _ => cur.tokens += 1,
        }
    }
    // Unclosed groups still count.
    cur.finish_item();
    while let Some(mut parent) = open.pop() {
        parent.tokens += 1;
        parent.inner = parent.inner.max(cur.best + 1);
        parent.finish_item();
        cur = parent;
    }
    cur.best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::LexOptions;
    use crate::sql::lexer::scan;

    fn bound(text: &str) -> usize {
        let s = scan(text, LexOptions::default()).expect("scans");
        nesting_bound(text, &s.tokens)
    }

    #[test]
    fn chains_count_each_operator_lists_do_not() {
        let chain = format!("select 1{}", "+1".repeat(1000));
        assert!(bound(&chain) >= 1000, "{}", bound(&chain));
        let list = format!("select 1 where x in (1{})", ",1".repeat(100_000));
        assert!(bound(&list) < 20, "{}", bound(&list));
        let values = format!(
            "insert into t values (1, 'a'){}",
            ", (2, 'b')".repeat(50_000)
        );
        assert!(bound(&values) < 20, "{}", bound(&values));
    }

    #[test]
    fn brackets_add_to_the_item_they_open_in() {
        let nested = format!("select {}1{}", "(1+".repeat(40), ")".repeat(40));
        assert!(bound(&nested) >= 120, "{}", bound(&nested));
        // A deep group anywhere in a long chain adds to the chain's length.
        let late = format!(
            "select {}1{} {}",
            "(1+".repeat(40),
            ")".repeat(40),
            "+1".repeat(500)
        );
        assert!(bound(&late) >= 1100, "{}", bound(&late));
        // Many shallow groups do not add up.
        let ors = format!(
            "select 1 where (a=1 and b=2){}",
            " or (a=1 and b=2)".repeat(1000)
        );
        assert!(bound(&ors) < 2100, "{}", bound(&ors));
    }
}
