//! SQL classification for PostgreSQL.
//!
//! Every statement of a query text becomes a [`SqlStatement`]: its worst effect
//! ([`SqlKind`](crate::action::SqlKind)), the tables it names, whether it is an UPDATE or
//! DELETE without WHERE, and its shape (the normalised text). Classification is done once
//! per shape and cached.
//!
//! # How
//! A scanner that follows PostgreSQL's own lexer decides where comments, literals, quoted
//! identifiers and statements begin and end, and produces the fingerprint. It is the only
//! authority on that: each `;`-separated statement is rebuilt from its tokens as canonical
//! text (literals become `''` or `0`) before `sqlparser` parses it, so `sqlparser` never
//! sees a comment or a literal's contents. Its tokens of that text must still be exactly
//! the scanner's (words, identifiers, literals, parameters) and it must find exactly one
//! statement; otherwise every statement of the text is `Unknown`. A statement `sqlparser`
//! cannot parse is `Unknown` (`parsed = false`), except `TABLE name` and the administrative
//! utilities listed below, recognised by their first words.
//!
//! The scanner gives up, and the text is one `Unknown` statement, on anything unterminated
//! and on text whose meaning differs between PostgreSQL versions or is an error there: `1abc`,
//! `0x1F`, `1_000`, `1..2`, `$1abc`, `$abc` without a closing `$`, `""`, `\v`, control
//! characters. With `standard_conforming_strings = off` any text containing a backslash is
//! all `Unknown`. A string continued over a newline (`E'a'\n'b'`) is one literal, lexed in
//! the first part's mode, as PostgreSQL does. `U&"..."` identifiers are scanned but
//! `sqlparser` cannot read them, so they make a statement `Unknown`.
//!
//! # Bounds
//! A text over 4 MiB, or a statement of more than a million tokens or whose expressions
//! nest too deep to walk safely (see `limits`), is not analysed: it is `Unknown` with a
//! [`refusal`](crate::action::SqlStatement::refusal), which policy never overrides. Deep
//! statements within the bound are analysed on a stack of their own.
//!
//! # Kinds
//! Kinds come from allow-lists; anything not listed is `Unknown`, never `Read`. The worst
//! effect of a statement and everything nested in it (CTEs, subqueries, PREPARE bodies,
//! function calls anywhere) wins.
//! - **Read**: SELECT (also `FOR UPDATE`), VALUES, TABLE, SHOW, plain EXPLAIN, `COPY ... TO
//!   STDOUT`. Plain EXPLAIN only plans its statement, so the statement's own kind is ignored,
//!   but dangerous function calls inside still count.
//! - **Session**: BEGIN/START TRANSACTION, COMMIT/END, ROLLBACK, SAVEPOINT, RELEASE, SET/RESET
//!   of ordinary parameters, SET TIME ZONE, SET TRANSACTION, DISCARD, DEALLOCATE, DECLARE,
//!   FETCH, CLOSE, LISTEN, UNLISTEN, PREPARE (plus the kind of the prepared statement).
//! - **Write**: INSERT, UPDATE, DELETE, MERGE (also inside CTEs), SELECT INTO, `COPY ...
//!   FROM STDIN`, EXPLAIN ANALYZE of a write (an `ANALYZE` option counts unless its value is
//!   the keyword `false`/`off`; `ANALYSE` too; an unknown option counts as running), NOTIFY,
//!   LOCK, and calls of `nextval`, `setval`, `pg_notify`.
//! - **Ddl**: CREATE/ALTER/DROP of tables, views, indexes, schemas, sequences, types, domains,
//!   functions, procedures, triggers, operators, collations, text search objects; TRUNCATE;
//!   COMMENT ON; renames.
//! - **Admin**: GRANT, REVOKE, CREATE/ALTER/DROP ROLE or USER, CREATE/DROP DATABASE,
//!   CREATE/DROP EXTENSION, CREATE SERVER, row-security policies, CALL, EXECUTE, DO, LOAD,
//!   VACUUM, ANALYZE, CHECKPOINT, CLUSTER, REINDEX, ALTER SYSTEM, SECURITY LABEL, IMPORT
//!   FOREIGN SCHEMA, COPY to or from a server file or PROGRAM, SET ROLE, SET SESSION
//!   AUTHORIZATION, SET NAMES, RESET ALL, and SET/RESET of `role`, `session_authorization`,
//!   `standard_conforming_strings`, `backslash_quote`, `client_encoding`, `search_path` (it
//!   redirects unqualified names, so table policies could be dodged), `session_replication_role`,
//!   `row_security`, `allow_system_table_mods`, `lo_compat_privileges`, the preload library
//!   lists and `dynamic_library_path`. `escape_string_warning` is an ordinary setting: it
//!   changes no meaning.
//! - Admin functions (any schema, any case): server files (`pg_read_file`,
//!   `pg_read_binary_file`, `pg_stat_file`, `pg_ls_*`, `pg_file_*`), large objects (`lo_*`
//!   except `lo_get`, `lowrite`), backends and server state (`pg_terminate_backend`,
//!   `pg_cancel_backend`, `pg_reload_conf`, `pg_rotate_logfile*`, `set_config`,
//!   `pg_stat_reset*`, backup, WAL and replication-slot functions, `pg_logical_*`,
//!   `pg_replication_origin_*`), advisory locks (`pg_advisory_*`, `pg_try_advisory_*`),
//!   `dblink*`, and functions that run SQL given as text or read tables the query does not
//!   name (`query_to_xml*`, `cursor_to_xml*`, `table_to_xml*`, `schema_to_xml*`,
//!   `database_to_xml*`, `ts_stat`, `ts_rewrite`). `pg_sleep*` and `txid_*` are reads.
//! - **Call**: any other function call not on the allow-list of side-effect-free built-ins
//!   (`pure`), unqualified or in `pg_catalog`/`information_schema`; the statement records
//!   the names in [`functions`](crate::action::SqlStatement::functions). `(x).f` counts as a
//!   call of `f` (PostgreSQL runs it as `f(x)` when `x` has no field `f`), except the fields
//!   of a few built-ins' composite results that drivers read; `t.f` counts when `f` is a
//!   function with known effects (other names are taken for columns). `Call` ranks above
//!   `Write`: a write calling an unknown function is decided as a call.
//!
//! # Tables
//! Every relation named (FROM, JOIN, DML targets, COPY, DDL, TABLE, SELECT INTO, subqueries,
//! CTE bodies), lower-cased, truncated to 63 bytes per part as PostgreSQL does. A qualified
//! name adds each suffix too (`public.orders` and `orders`) so a policy on the bare name
//! matches. A name that resolves to a CTE in scope is not a table (scoping follows
//! PostgreSQL: a non-recursive CTE body sees only earlier CTEs, DML targets are always tables).
//! `ONLY` is not shown to `sqlparser` before a relation (it would read `FROM ONLY t` as a
//! table `only` aliased `t`). `BEGIN ATOMIC` bodies hold `;` that does not end a statement,
//! so such texts are all `Unknown`.
//!
//! # Shapes and caching
//! The fingerprint lower-cases keywords and unquoted identifiers (ASCII only, like
//! PostgreSQL), replaces literals by `?`, keeps quoted identifiers and `$n` verbatim, and
//! collapses whitespace and comments to one space. The cache key is the same text with each
//! literal marked as string or number, so a literal never collides with a `?` operator and
//! classification is a function of the key.

mod cache;
mod classify;
mod kinds;
mod lexer;
mod limits;
mod pure;
mod walk;

#[cfg(test)]
mod attack_tests;
#[cfg(test)]
mod fingerprint_tests;
#[cfg(test)]
mod tests;

use crate::action::SqlStatement;
pub use cache::{Classified, Classifier};

/// Lexer mode that must track the server: when the backend reports
/// standard_conforming_strings=off, backslashes escape in plain '...' strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LexOptions {
    /// The server's `standard_conforming_strings` setting.
    pub standard_conforming_strings: bool,
}

impl Default for LexOptions {
    fn default() -> Self {
        LexOptions {
            standard_conforming_strings: true,
        }
    }
}

/// Fast single pass: the normalised shape of the whole query text, or `None` if it cannot be
/// tokenised safely.
pub fn fingerprint(text: &str, opts: LexOptions) -> Option<String> {
    lexer::fingerprint(text, opts)
}

/// Classifies one query text (possibly several `;`-separated statements) without caching.
pub fn classify_uncached(text: &str, opts: LexOptions) -> Vec<SqlStatement> {
    classify::classify(text, opts)
}
