//! State the two halves of a session share, and the bookkeeping that keeps the gateway's
//! view of prepared statements and portals in step with the target's.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use gateway_core::action::{SqlKind, SqlStatement};

use crate::mask::catalog::Described;

/// PostgreSQL keys statements and portals by their first NAMEDATALEN-1 bytes.
const NAME_BYTES: usize = 63;
/// Most prepared statements or portals one session may hold.
pub(super) const MAX_NAMES: usize = 10_000;

/// A statement or portal name as the target keys it.
pub(super) type Name = Box<[u8]>;

/// The key PostgreSQL uses for a statement or portal name.
pub(super) fn name_key(name: &str) -> Name {
    let b = name.as_bytes();
    b[..b.len().min(NAME_BYTES)].into()
}

/// A prepared statement as the client parsed it.
pub(super) struct Prepared {
    pub text: Arc<str>,
    pub statements: Arc<[Arc<SqlStatement>]>,
    /// Its result columns, once a Describe answered (only kept while masking applies).
    pub described: Mutex<Option<Arc<[Described]>>>,
}

impl Prepared {
    pub fn new(text: Arc<str>, statements: Arc<[Arc<SqlStatement>]>) -> Prepared {
        Prepared {
            text,
            statements,
            described: Mutex::new(None),
        }
    }

    /// The result columns a Describe reported.
    pub fn described(&self) -> Option<Arc<[Described]>> {
        self.described
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What masking needs to know about a command whose results are coming.
pub(super) struct ResultSource {
    /// The statement text (for COPY options).
    pub text: Arc<str>,
    /// The first column rule the text mentions.
    pub mentioned: Option<usize>,
    /// The first column rule covering a table whose whole rows the statement outputs through
    /// an expression (see `SessionMasks::whole_row_rule`).
    pub rows: Option<usize>,
    /// The first column rule that may cover a table the statement reads (or the one it
    /// mentions): its errors and notices carry no quoted value.
    pub touched: Option<usize>,
    /// For an Execute: its statement and the Bind's result formats.
    pub exec: Option<(Arc<Prepared>, Arc<[i16]>)>,
    /// The statements as classified, with their outputs' lineage.
    pub statements: Arc<[Arc<SqlStatement>]>,
}

impl Prepared {
    /// A statement nothing is known about: unknown, never a read.
    pub fn unknown(text: String) -> Arc<Prepared> {
        Arc::new(Prepared::new(
            Arc::from(text),
            Arc::from(vec![Arc::new(unknown_statement())]),
        ))
    }
}

/// The classification of something that could not be classified.
pub(super) fn unknown_statement() -> SqlStatement {
    SqlStatement {
        kind: SqlKind::Unknown,
        tables: Vec::new(),
        unbounded: false,
        shape: String::new(),
        functions: Vec::new(),
        parsed: false,
        refusal: None,
        outputs: None,
    }
}

/// A command forwarded to the target whose completion has not been seen yet.
pub(super) struct InFlight {
    /// Index of the sync point (Query, Sync or FunctionCall) that ends its batch.
    pub batch: u64,
    /// Command number in the session; 0 for an empty query, which is not audited.
    pub command: u64,
    pub started: Instant,
    /// Set while masking applies.
    pub source: Option<Arc<ResultSource>>,
}

/// A refused command's error, waiting for the target's answer to the substitute.
pub(super) struct Substitute {
    pub batch: u64,
    pub error: Bytes,
}

/// A Parse, Bind or Close sent to the target and not yet confirmed.
pub(super) enum PendingOp {
    Parse(Name, Arc<Prepared>),
    Bind(Name, Arc<Prepared>),
    Close(u8, Name),
}

/// State both halves see. Held only for short, non-awaiting sections.
pub(super) struct Shared {
    /// Seq of the last audit event the client half staged: results read after it was set
    /// are released only once it is written.
    pub audit_seq: u64,
    pub inflight: VecDeque<InFlight>,
    pub substitutes: VecDeque<Substitute>,
    /// Parse/Bind/Close in the order sent, with their batch.
    pub pending: VecDeque<(u64, PendingOp)>,
    /// Describes sent while masking applies, in order, with their batch and the statement
    /// whose result columns they report.
    pub describes: VecDeque<(u64, Arc<Prepared>)>,
    /// Statements and portals the target has confirmed (ParseComplete, BindComplete).
    pub statements: HashMap<Name, Arc<Prepared>>,
    pub portals: HashMap<Name, Arc<Prepared>>,
    /// A Parse or Bind the upstream counted on did not happen (an error skipped it): its
    /// optimistic view must be rebuilt from the confirmed one before it is trusted again.
    pub statements_diverged: bool,
    /// The target dropped its portals (end of transaction).
    pub portals_dropped: bool,
    /// Sync points sent to the target so far.
    pub batches_sent: u64,
    /// ReadyForQuery messages seen from the target so far.
    pub batches_done: u64,
    /// The target's `standard_conforming_strings`, which changes how SQL is lexed.
    pub standard_conforming_strings: bool,
    /// The session's client encoding lets a multi-byte character end in a quote or
    /// backslash byte (SJIS, BIG5, GBK...): no lexer that reads UTF-8 can split such text
    /// the way the server does, so every statement is unknown.
    pub unsafe_encoding: bool,
    /// The statement sent in place of a refused one: it cannot parse, and its name is
    /// random per session so that no client statement can produce the same error.
    pub marker: String,
}

/// Client-only encodings whose multi-byte characters may contain ASCII quote bytes.
const UNSAFE_CLIENT_ENCODINGS: &[&str] = &[
    "SJIS",
    "SHIFT_JIS_2004",
    "BIG5",
    "GBK",
    "UHC",
    "GB18030",
    "JOHAB",
];

impl Shared {
    pub fn new(marker: String) -> Shared {
        Shared {
            audit_seq: 0,
            inflight: VecDeque::new(),
            substitutes: VecDeque::new(),
            pending: VecDeque::new(),
            describes: VecDeque::new(),
            statements: HashMap::new(),
            portals: HashMap::new(),
            statements_diverged: false,
            portals_dropped: false,
            batches_sent: 0,
            batches_done: 0,
            standard_conforming_strings: true,
            unsafe_encoding: false,
            marker,
        }
    }

    /// Follow a ParameterStatus the target reported.
    pub fn track_parameter(&mut self, name: &str, value: &str) {
        match name {
            "standard_conforming_strings" => self.standard_conforming_strings = value == "on",
            "client_encoding" => {
                self.unsafe_encoding = UNSAFE_CLIENT_ENCODINGS
                    .iter()
                    .any(|e| e.eq_ignore_ascii_case(value))
            }
            _ => {}
        }
    }

    /// The target confirmed the oldest pending operation of kind `tag` ('1', '2', '3').
    pub fn confirm(&mut self, tag: u8) {
        let Some((_, op)) = self.pending.pop_front() else {
            return;
        };
        match (tag, op) {
            (b'1', PendingOp::Parse(name, p)) => {
                self.statements.insert(name, p);
            }
            (b'2', PendingOp::Bind(name, p)) => {
                self.portals.insert(name, p);
            }
            (b'3', PendingOp::Close(kind, name)) => {
                if kind == b'S' {
                    self.statements.remove(&name);
                } else {
                    self.portals.remove(&name);
                }
            }
            // Completions arrive in the order the operations were sent; anything else
            // means the views are out of step: distrust the optimistic one.
            _ => self.statements_diverged = true,
        }
    }

    /// A batch ended (ReadyForQuery with transaction status `status`).
    pub fn batch_done(&mut self, status: u8) -> u64 {
        let done = self.batches_done;
        self.batches_done += 1;
        // Operations of this batch the target never confirmed were skipped after an error.
        while self.pending.front().is_some_and(|(b, _)| *b <= done) {
            self.pending.pop_front();
            self.statements_diverged = true;
        }
        while self.substitutes.front().is_some_and(|s| s.batch <= done) {
            self.substitutes.pop_front();
        }
        while self.describes.front().is_some_and(|d| d.0 <= done) {
            self.describes.pop_front();
        }
        if status == b'I' && !self.portals.is_empty() {
            // Outside a transaction block the target has dropped every portal.
            self.portals.clear();
            self.portals_dropped = true;
        }
        done
    }

    /// Forget every statement and portal (DISCARD, DEALLOCATE through SQL).
    pub fn forget_all(&mut self) {
        self.statements.clear();
        self.portals.clear();
        self.statements_diverged = true;
        self.portals_dropped = true;
    }
}
