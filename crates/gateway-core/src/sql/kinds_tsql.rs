//! T-SQL allow-lists: statements, SET options and functions mapped to an effect kind. Anything
//! not listed here is `Unknown`.

use sqlparser::ast::{
    Ident, ObjectName, ObjectType, RaisErrorOption, Set, SetSessionParamKind, Statement,
};

use super::pure_tsql::{is_pure, is_pure_table_function};
use crate::action::SqlKind;

/// An identifier as recorded for T-SQL: lower-cased whether quoted or not (SQL Server names
/// are case-insensitive under the usual collations). No truncation: longer names are an error.
pub(crate) fn tsql_ident(ident: &Ident) -> String {
    ident.value.to_lowercase()
}

/// The parts of a name, lower-cased; `None` for non-identifier parts.
pub(crate) fn tsql_name_parts(name: &ObjectName) -> Option<Vec<String>> {
    name.0
        .iter()
        .map(|p| p.as_ident().map(tsql_ident))
        .collect()
}

/// The effect of a statement node itself, not counting what it contains (nested statements of
/// blocks, queries and function calls are visited separately).
pub(crate) fn statement_kind(stmt: &Statement) -> SqlKind {
    use SqlKind::*;
    match stmt {
        Statement::Query(_) => Read,

        // BEGIN TRAN, and also BEGIN ... END, BEGIN TRY and BEGIN CATCH, which sqlparser reads
        // as transaction statements: blocks have no effect of their own.
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::Declare { .. }
        | Statement::Open(_)
        | Statement::Fetch { .. }
        | Statement::Close { .. }
        | Statement::Deallocate { .. }
        | Statement::Print(_)
        | Statement::WaitFor(_)
        | Statement::Throw(_)
        | Statement::Return(_)
        | Statement::If(_)
        | Statement::While(_) => Session,
        // WITH LOG writes to the server's error log.
        Statement::RaisError { options, .. } => {
            if options.contains(&RaisErrorOption::Log) {
                Admin
            } else {
                Session
            }
        }
        Statement::Set(set) => set_kind(set),

        Statement::Insert(_)
        | Statement::Update(_)
        | Statement::Delete(_)
        | Statement::Merge(_) => Write,

        Statement::CreateTable(_)
        | Statement::CreateView(_)
        | Statement::CreateIndex(_)
        | Statement::CreateSchema { .. }
        | Statement::CreateFunction(_)
        | Statement::CreateProcedure { .. }
        | Statement::CreateTrigger(_)
        | Statement::CreateSequence { .. }
        | Statement::CreateType { .. }
        | Statement::AlterTable(_)
        | Statement::AlterSchema(_)
        | Statement::AlterIndex { .. }
        | Statement::AlterView { .. }
        | Statement::AlterFunction(_)
        | Statement::AlterType(_)
        | Statement::DropFunction(_)
        | Statement::DropProcedure { .. }
        | Statement::DropTrigger(_)
        | Statement::Truncate(_) => Ddl,
        Statement::Drop { object_type, .. } => match object_type {
            ObjectType::Role | ObjectType::User | ObjectType::Database => Admin,
            ObjectType::Table
            | ObjectType::View
            | ObjectType::Index
            | ObjectType::Schema
            | ObjectType::Sequence
            | ObjectType::Type => Ddl,
            _ => Unknown,
        },

        // EXEC runs a procedure (arbitrary code, or SQL given as text with sp_executesql), USE
        // changes what unqualified names resolve to.
        Statement::Grant(_)
        | Statement::Revoke(_)
        | Statement::Deny(_)
        | Statement::CreateRole(_)
        | Statement::AlterRole { .. }
        | Statement::CreateUser(_)
        | Statement::AlterUser(_)
        | Statement::CreateDatabase { .. }
        | Statement::Execute { .. }
        | Statement::Kill { .. }
        | Statement::Use(_) => Admin,

        _ => Unknown,
    }
}

/// SET options with no effect on data, names, identity or how later text is lexed.
const SESSION_OPTIONS: &[&str] = &[
    "nocount",
    "xact_abort",
    "ansi_nulls",
    "ansi_padding",
    "ansi_warnings",
    "ansi_null_dflt_on",
    "ansi_null_dflt_off",
    "arithabort",
    "arithignore",
    "concat_null_yields_null",
    "numeric_roundabort",
    "cursor_close_on_commit",
    "implicit_transactions",
    "lock_timeout",
    "deadlock_priority",
    "dateformat",
    "datefirst",
    "language",
    "rowcount",
    "textsize",
    "query_governor_cost_limit",
    "fmtonly",
    "noexec",
    "parseonly",
    "showplan_all",
    "showplan_text",
    "showplan_xml",
    "forceplan",
    "remote_proc_transactions",
];

fn set_kind(set: &Set) -> SqlKind {
    match set {
        // `SET @v = expr`: the expression is visited on its own.
        Set::SingleAssignment { variable, .. } => match variable.0.as_slice() {
            [part] if part.as_ident().is_some_and(|i| i.value.starts_with('@')) => SqlKind::Session,
            _ => SqlKind::Unknown,
        },
        Set::SetTransaction { .. } => SqlKind::Session,
        Set::SetSessionParam(param) => match param {
            SetSessionParamKind::Generic(g) => {
                // The value is kept only as text, so nothing in it could be visited: only plain
                // values (a word, a number, a string, a variable) are accepted.
                let plain = !g.value.is_empty()
                    && g.value.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'@' | b'\'' | b'-')
                    });
                if !plain {
                    return SqlKind::Unknown;
                }
                g.names
                    .iter()
                    .map(|n| option_kind(n, &g.value))
                    .max()
                    .unwrap_or(SqlKind::Unknown)
            }
            // Lets explicit values into an identity column: a change to how a table behaves.
            SetSessionParamKind::IdentityInsert(_) => SqlKind::Admin,
            SetSessionParamKind::Statistics(_) | SetSessionParamKind::Offsets(_) => {
                SqlKind::Session
            }
        },
        _ => SqlKind::Unknown,
    }
}

/// One `SET option value`. QUOTED_IDENTIFIER OFF (also through ANSI_DEFAULTS OFF) makes `"..."`
/// a string, changing how the rest of the batch and later batches are read; CONTEXT_INFO is
/// read by applications as a security context.
fn option_kind(name: &str, value: &str) -> SqlKind {
    let name = name.to_ascii_lowercase();
    match name.as_str() {
        "quoted_identifier" | "ansi_defaults" => {
            if value.eq_ignore_ascii_case("on") {
                SqlKind::Session
            } else {
                SqlKind::Admin
            }
        }
        "context_info" => SqlKind::Admin,
        n if SESSION_OPTIONS.contains(&n) => SqlKind::Session,
        _ => SqlKind::Unknown,
    }
}

/// Functions that read data from outside the database or files on the server.
const ADMIN_FUNCTIONS: &[&str] = &[
    "openrowset",
    "openquery",
    "opendatasource",
    "openxml",
    "fn_get_audit_file",
    "fn_xe_file_target_read_file",
    "fn_trace_gettable",
    "fn_dblog",
    "fn_dump_dblog",
];

/// The effect of calling a function, by name: `Some(Read)` for a built-in free of side
/// effects, `Some(Admin)` for one reading outside the database, `None` for any other function
/// (decided as `sql.call`). `in_from` is a call in FROM, where only table-valued built-ins
/// count as built-ins (a user's inline table function may be called without its schema).
pub(crate) fn function_kind(name: &ObjectName, in_from: bool) -> Option<SqlKind> {
    let Some(parts) = tsql_name_parts(name) else {
        return Some(SqlKind::Unknown);
    };
    let Some((f, schema)) = parts.split_last() else {
        return Some(SqlKind::Unknown);
    };
    if ADMIN_FUNCTIONS.contains(&f.as_str()) {
        return Some(SqlKind::Admin);
    }
    // Scalar user functions must be called with their schema, so an unqualified name is a
    // built-in; a qualified one is somebody's function.
    let builtin = schema.is_empty()
        && if in_from {
            is_pure_table_function(f)
        } else {
            is_pure(f)
        };
    builtin.then_some(SqlKind::Read)
}
