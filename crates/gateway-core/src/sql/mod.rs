//! SQL classification for PostgreSQL and T-SQL (SQL Server, Azure SQL); the dialect is part
//! of [`LexOptions`]. The sections before `# T-SQL` describe PostgreSQL.
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
//! sees a comment or a literal's contents (except `set_config`'s setting name, see Kinds). Its tokens of that text must still be exactly
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
//!   `pg_cancel_backend`, `pg_reload_conf`, `pg_rotate_logfile*`, `set_config` (but see below),
//!   `pg_stat_reset*`, backup, WAL and replication-slot functions, `pg_logical_*`,
//!   `pg_replication_origin_*`), advisory locks (`pg_advisory_*`, `pg_try_advisory_*`),
//!   `dblink*`, and functions that run SQL given as text or read tables the query does not
//!   name (`query_to_xml*`, `cursor_to_xml*`, `table_to_xml*`, `schema_to_xml*`,
//!   `database_to_xml*`, `ts_stat`, `ts_rewrite`). `pg_sleep*` and `txid_*` are reads.
//! - `set_config(name, value, is_local)`, unqualified or in `pg_catalog`, with `name` a plain
//!   `'...'` literal spelt like a setting (ASCII letters, digits, `_`, one or two `.`-separated
//!   parts), is judged as `SET name` would be. The scanner keeps that literal, lower-cased, in
//!   the shape and the cache key (`set_config('jit', ?, false)`); any other first argument
//!   reaches the parser as `''` and the call stays `Admin`.
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
//! # T-SQL
//! The same design with SQL Server's rules (`lexer_tsql`, `classify_tsql`, `kinds_tsql`,
//! `pure_tsql`), failing closed: anything not listed is `Unknown`, never `Read`.
//! - **Scanning.** `'...'` and `N'...'` strings with `''` (no backslash escapes, no E-strings,
//!   no dollar quotes); `[...]` with `]]` and `"..."` with `""` are identifiers
//!   (QUOTED_IDENTIFIER ON); `--` comments end at a line feed; `/* */` comments nest; `@v`,
//!   `@@global`, `#t`, `##t` are names; numbers include `1.5e3` and binary `0x1F`. The scanner
//!   gives up (one `Unknown` statement) on anything unterminated, `$` (money, `$action`),
//!   `{`/`}` (ODBC escapes), `?`, `` ` ``, `\`, NUL and control characters, non-ASCII outside
//!   literals, quoted identifiers and comments, a lone carriage return in a `--` comment, a
//!   number run into a name (`1abc`, `0x1G`), a lone `@` or `#`, and any line whose first token
//!   is `GO`: that is a client tool's batch separator, which a client that sends it has got
//!   wrong (mid-line, `GO` is an ordinary name, as the server reads it).
//! - **Statements.** They need no `;`, so the whole batch is rebuilt as canonical text and
//!   `sqlparser` (`MsSqlDialect`, semicolons optional) reads statement after statement; its
//!   tokens must match the scanner's over the whole batch, `;` included. Each statement it
//!   finds is one [`SqlStatement`] whose shape is its own tokens (`select 1 delete from t` is a
//!   `Read` and an unbounded `Write`). A block (`IF`/`ELSE`, `WHILE`, `BEGIN ... END`, a
//!   procedure body) is one statement with the worst kind of everything inside it; `BEGIN
//!   TRY`/`END TRY`/`BEGIN CATCH`/`END CATCH` are read as statements of their own (`Session`)
//!   between the statements they hold. If `sqlparser` cannot read the batch, each
//!   `;`-separated part is read alone, and a part it cannot read is accepted only when it is
//!   exactly `RECONFIGURE [WITH OVERRIDE]`, `SHUTDOWN [WITH NOWAIT]`, `DBCC name [(names and
//!   literals)] [WITH options]` (`Admin`) or `BEGIN|COMMIT|ROLLBACK|SAVE TRAN[SACTION] name`
//!   (`Session`); otherwise every statement of the batch is `Unknown`. So BULK INSERT,
//!   BACKUP, RESTORE, CREATE/ALTER LOGIN, `EXEC @r = p`, `INSERT ... EXEC`, `OPENROWSET(BULK
//!   ...)` and `NEXT VALUE FOR` are `Unknown` (which ranks above `Admin`).
//! - **Read**: SELECT without INTO, WITH ... SELECT.
//! - **Session**: BEGIN/COMMIT/ROLLBACK/SAVE TRAN, DECLARE (variables and cursors), `SET @v =`
//!   (plus the kind of what they compute), OPEN/FETCH/CLOSE/DEALLOCATE, PRINT, WAITFOR
//!   DELAY/TIME, THROW, RAISERROR (without `WITH LOG`), RETURN, IF/WHILE/BEGIN...END
//!   themselves, SET TRANSACTION ISOLATION LEVEL, SET STATISTICS, and SET of the ordinary
//!   options in `kinds_tsql` (NOCOUNT, XACT_ABORT, ANSI_*, ARITHABORT, LOCK_TIMEOUT,
//!   DEADLOCK_PRIORITY, DATEFORMAT, DATEFIRST, LANGUAGE, ROWCOUNT, TEXTSIZE, NOEXEC,
//!   SHOWPLAN_*, ...), whose value must be a single word, number, string or variable. Any other
//!   option is `Unknown`.
//! - **Write**: INSERT, UPDATE, DELETE, MERGE, SELECT INTO (a `#temp` target too: it is named
//!   `#t` so policy can allow it). UPDATE/DELETE without WHERE are `unbounded`.
//! - **Ddl**: CREATE/ALTER/DROP of tables, views, indexes, procedures, functions, triggers,
//!   schemas, types, sequences; TRUNCATE.
//! - **Admin**: GRANT, REVOKE, DENY, CREATE/ALTER/DROP ROLE and USER, CREATE/DROP DATABASE,
//!   KILL, EXEC/EXECUTE of anything (a procedure runs arbitrary code; `EXEC sp_executesql
//!   N'...'` and `EXEC ('...')` run text the classifier does not see), `USE db` (it redirects
//!   unqualified names, as `search_path` does), RAISERROR WITH LOG, SET QUOTED_IDENTIFIER OFF
//!   and ANSI_DEFAULTS OFF (they turn `"..."` into strings for the rest of the session),
//!   SET CONTEXT_INFO (read by applications as a security context), SET IDENTITY_INSERT,
//!   the utility statements above, a four-part name (`server.db.schema.t`, a linked server),
//!   and calls of OPENROWSET, OPENQUERY, OPENDATASOURCE, OPENXML and the `fn_*` functions that
//!   read server files or logs.
//! - **Call**: any function not on the allow-list of side-effect-free built-ins (`pure_tsql`).
//!   Only unqualified names qualify (SQL Server requires the schema on a scalar user function);
//!   in FROM only the table-valued built-ins `string_split` and `generate_series` do, since a
//!   user's table function may be called without its schema.
//! - **Tables**: every name lower-cased, bracketed or quoted ones too (SQL Server names are
//!   case-insensitive under the usual collations), no truncation, each suffix added
//!   (`[DB].[dbo].[Orders]` gives `db.dbo.orders`, `dbo.orders`, `orders`; `db..t` gives
//!   `db..t` and `t`); temporary tables and table variables as written (`#t`, `##t`, `@t`).
//! - **Bounds**: as for PostgreSQL, but the whole batch is parsed at once, so the token limit
//!   applies to the batch and one `;`-separated part nesting too deep refuses the batch (that
//!   part with the refusal, the others `Unknown`). A part without `;` counts all its
//!   statements' tokens towards its nesting bound. Blocks nest through `sqlparser`'s recursion
//!   limit: deeper is `Unknown`.
//!
//! # Shapes and caching
//! The fingerprint lower-cases keywords and unquoted identifiers (ASCII only, like
//! PostgreSQL), replaces literals by `?`, keeps quoted identifiers and `$n` verbatim, and
//! collapses whitespace and comments to one space. The one literal kept is `set_config`'s
//! setting name (above). The cache key is the same text with each
//! literal marked as string or number, so a literal never collides with a `?` operator and
//! classification is a function of the key.

mod cache;
mod classify;
mod classify_tsql;
mod kinds;
mod kinds_tsql;
mod lexer;
mod lexer_tsql;
mod limits;
mod lineage;
mod pure;
mod pure_tsql;
mod walk;

#[cfg(test)]
mod attack_tests;
#[cfg(test)]
mod fingerprint_tests;
#[cfg(test)]
mod set_config_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tsql_tests;

use crate::action::SqlStatement;
pub use cache::{Classified, Classifier};

/// The SQL language a text is written in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// PostgreSQL.
    #[default]
    Postgres,
    /// Transact-SQL (SQL Server, Azure SQL), with QUOTED_IDENTIFIER ON.
    TSql,
}

/// Lexer mode that must track the server: the dialect, and for PostgreSQL, when the backend
/// reports standard_conforming_strings=off, backslashes escape in plain '...' strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LexOptions {
    /// The server's `standard_conforming_strings` setting (PostgreSQL only; ignored for T-SQL).
    pub standard_conforming_strings: bool,
    /// The language of the text.
    pub dialect: Dialect,
}

impl Default for LexOptions {
    fn default() -> Self {
        LexOptions {
            standard_conforming_strings: true,
            dialect: Dialect::Postgres,
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
