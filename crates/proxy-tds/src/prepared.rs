//! Prepared-statement handles of one session, as the gateway saw them handed out.
//!
//! `sp_prepare`/`sp_prepexec` (and `sp_cursorprepare`/`sp_cursorprepexec`) send a statement
//! the target keeps under an integer handle, returned as the call's first (OUTPUT) parameter;
//! a later `sp_execute <handle>` (`sp_cursorexecute`) runs it without its text. The gateway
//! records the text under the handle the target returned, so that the execute is decided as
//! that statement. A handle it did not see handed out is not guessed at: its execute is
//! `sql.unknown`.
//!
//! The view must never hold a handle under a text other than the target's, so entries go
//! whenever the target may have let handles go or handed out one unseen: on a connection
//! reset, on `sp_unprepare`, on any request whose text names a prepare procedure, and when a
//! preparing request's handle could not be read from its answer.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use gateway_core::action::SqlStatement;

/// Handles kept at most per session; past it the oldest is forgotten (its execute is then
/// `sql.unknown`).
pub(crate) const MAX_HANDLES: usize = 1024;
/// Statement text kept at most per session, in bytes.
pub(crate) const MAX_TEXT_BYTES: usize = 8 << 20;

/// Which procedures a handle belongs to: the target numbers the two kinds apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Space {
    /// `sp_prepare`, `sp_prepexec`; run by `sp_execute`, dropped by `sp_unprepare`.
    Statement,
    /// `sp_cursorprepare`, `sp_cursorprepexec`; run by `sp_cursorexecute`, dropped by
    /// `sp_cursorunprepare`.
    Cursor,
}

/// A statement as it was prepared: its text and its classification.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub text: Arc<str>,
    pub statements: Arc<[Arc<SqlStatement>]>,
}

/// A preparing call on its way to the target: recorded once its answer names the handle.
#[derive(Debug)]
pub(crate) struct Pending {
    pub space: Space,
    pub prepared: Prepared,
}

/// The session's handles, bounded in number and in text.
#[derive(Debug, Default)]
pub(crate) struct Handles {
    map: HashMap<(Space, i64), (u64, Prepared)>,
    /// Insertion order, oldest first, for eviction.
    order: BTreeMap<u64, (Space, i64)>,
    next: u64,
    bytes: usize,
}

impl Handles {
    pub fn new() -> Handles {
        Handles::default()
    }

    /// The statement prepared under `handle`.
    pub fn get(&self, space: Space, handle: i64) -> Option<&Prepared> {
        self.map.get(&(space, handle)).map(|(_, p)| p)
    }

    /// Record `prepared` under `handle`, forgetting the oldest handles to stay in bounds. A
    /// text over the whole bound is not kept (and whatever the handle held before is gone).
    pub fn insert(&mut self, space: Space, handle: i64, prepared: Prepared) {
        self.remove(space, handle);
        let len = prepared.text.len();
        if len > MAX_TEXT_BYTES {
            return;
        }
        while self.map.len() >= MAX_HANDLES || self.bytes + len > MAX_TEXT_BYTES {
            let Some((_, (s, h))) = self.order.pop_first() else {
                break;
            };
            if let Some((_, gone)) = self.map.remove(&(s, h)) {
                self.bytes -= gone.text.len();
            }
        }
        self.next += 1;
        self.order.insert(self.next, (space, handle));
        self.bytes += len;
        self.map.insert((space, handle), (self.next, prepared));
    }

    /// Forget `handle`.
    pub fn remove(&mut self, space: Space, handle: i64) {
        if let Some((seq, gone)) = self.map.remove(&(space, handle)) {
            self.order.remove(&seq);
            self.bytes -= gone.text.len();
        }
    }

    /// Forget every handle.
    pub fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
        self.bytes = 0;
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

/// Whether `text` names a procedure that prepares or drops handles, or resets the connection
/// (`sp_prepare`, `sp_unprepare`, `sp_cursorprepexec`, `sp_reset_connection`, …), in any case.
pub(crate) fn touches_handles(text: &str) -> bool {
    let b = text.as_bytes();
    let has = |needle: &[u8]| {
        b.windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
    };
    has(b"prepare") || has(b"prepexec") || has(b"reset_connection")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared(text: &str) -> Prepared {
        Prepared {
            text: Arc::from(text),
            statements: Arc::from(Vec::new()),
        }
    }

    #[test]
    fn handles_are_kept_per_space_and_replaced_or_dropped() {
        let mut h = Handles::new();
        h.insert(Space::Statement, 1, prepared("select 1"));
        h.insert(Space::Cursor, 1, prepared("select 2"));
        assert_eq!(&*h.get(Space::Statement, 1).unwrap().text, "select 1");
        assert_eq!(&*h.get(Space::Cursor, 1).unwrap().text, "select 2");
        assert!(h.get(Space::Statement, 2).is_none());
        h.insert(Space::Statement, 1, prepared("delete from t"));
        assert_eq!(&*h.get(Space::Statement, 1).unwrap().text, "delete from t");
        h.remove(Space::Statement, 1);
        assert!(h.get(Space::Statement, 1).is_none());
        assert_eq!(h.len(), 1);
        h.clear();
        assert_eq!((h.len(), h.bytes), (0, 0));
    }

    #[test]
    fn the_number_of_handles_and_their_text_are_bounded_oldest_first() {
        let mut h = Handles::new();
        for i in 0..MAX_HANDLES as i64 + 10 {
            h.insert(Space::Statement, i, prepared("select 1"));
        }
        assert_eq!(h.len(), MAX_HANDLES);
        assert!(
            h.get(Space::Statement, 9).is_none(),
            "the oldest went first"
        );
        assert!(h.get(Space::Statement, 10).is_some());
        let big = "x".repeat(MAX_TEXT_BYTES / 2 + 1);
        h.insert(Space::Statement, -1, prepared(&big));
        h.insert(Space::Statement, -2, prepared(&big));
        assert!(h.bytes <= MAX_TEXT_BYTES);
        assert!(h.get(Space::Statement, -1).is_none());
        assert!(h.get(Space::Statement, -2).is_some());
        // A text over the whole bound is not kept, and the handle's old text goes too.
        h.insert(Space::Cursor, 5, prepared("select 1"));
        h.insert(Space::Cursor, 5, prepared(&"y".repeat(MAX_TEXT_BYTES + 1)));
        assert!(h.get(Space::Cursor, 5).is_none());
    }

    #[test]
    fn texts_naming_prepare_procedures_are_noticed_in_any_case() {
        assert!(touches_handles("EXEC SP_UNPREPARE 3"));
        assert!(touches_handles(
            "exec sp_prepare @h output, null, N'select 1'"
        ));
        assert!(touches_handles("exec sys.sp_PrepExec @h output"));
        assert!(touches_handles("exec sp_reset_connection"));
        assert!(!touches_handles("select * from orders"));
    }
}
