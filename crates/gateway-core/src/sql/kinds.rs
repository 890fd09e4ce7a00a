//! Allow-lists that map statements, settings and functions to an effect kind. Anything not
//! listed here is `Unknown`.

use sqlparser::ast::{
    CopySource, CopyTarget, DescribeAlias, Expr, Function, FunctionArg, FunctionArgExpr,
    FunctionArguments, ObjectName, ObjectType, Reset, Set, Statement, UtilityOption, Value,
};

use super::pure::is_pure;
use crate::action::SqlKind;

/// PostgreSQL keeps the first `NAMEDATALEN - 1` bytes of an identifier.
const MAX_IDENT_BYTES: usize = 63;

/// An identifier as PostgreSQL resolves it: unquoted ones are folded to lower case, and every
/// identifier is truncated to 63 bytes (on a character boundary).
pub(crate) fn pg_ident(ident: &sqlparser::ast::Ident) -> String {
    pg_ident_text(&ident.value, ident.quote_style.is_some())
}

/// [`pg_ident`] for an identifier's text (without quotes, escapes already removed).
pub(crate) fn pg_ident_text(value: &str, quoted: bool) -> String {
    let mut s = if quoted {
        value.to_owned()
    } else {
        value.to_ascii_lowercase()
    };
    if s.len() > MAX_IDENT_BYTES {
        let mut cut = MAX_IDENT_BYTES;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Table names to record for a resolved name: the whole name lower-cased, and each shorter
/// suffix down to the bare table, so policies written against either form match.
pub(crate) fn table_names(parts: &[String]) -> impl Iterator<Item = String> {
    let parts: Vec<String> = parts.iter().map(|p| p.to_lowercase()).collect();
    (0..parts.len()).map(move |i| parts[i..].join("."))
}

/// The parts of a name as PostgreSQL resolves them; `None` for non-identifier parts.
pub(crate) fn pg_name_parts(name: &ObjectName) -> Option<Vec<String>> {
    name.0.iter().map(|p| p.as_ident().map(pg_ident)).collect()
}

/// The effect of a statement node itself, not counting what it contains (nested queries,
/// statements and function calls are visited separately).
pub(crate) fn statement_kind(stmt: &Statement) -> SqlKind {
    use SqlKind::*;
    match stmt {
        Statement::Query(_) => Read,
        Statement::ShowVariable { .. } => Read,
        // DESCRIBE/DESC are not PostgreSQL.
        Statement::Explain {
            describe_alias: DescribeAlias::Explain,
            ..
        } => Read,

        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. }
        | Statement::Discard { .. }
        | Statement::Deallocate { .. }
        | Statement::Close { .. }
        | Statement::Fetch { .. }
        | Statement::Declare { .. }
        | Statement::Prepare { .. }
        | Statement::LISTEN { .. }
        | Statement::UNLISTEN { .. } => Session,
        Statement::Set(set) => set_kind(set),
        Statement::Reset(r) => match &r.reset {
            Reset::ALL | Reset::SessionAuthorization => Admin,
            Reset::ConfigurationParameter(name) => setting_kind(name),
        },

        Statement::Insert(_)
        | Statement::Update(_)
        | Statement::Delete(_)
        | Statement::Merge(_)
        | Statement::NOTIFY { .. }
        | Statement::Lock(_) => Write,
        Statement::Copy {
            source, to, target, ..
        } => match (to, target, source) {
            (false, CopyTarget::Stdin, CopySource::Table { .. }) => Write,
            (true, CopyTarget::Stdout, _) => Read,
            // Server files and programs, and anything else.
            _ => Admin,
        },

        Statement::CreateTable(_)
        | Statement::CreateView(_)
        | Statement::CreateIndex(_)
        | Statement::CreateSchema { .. }
        | Statement::CreateFunction(_)
        | Statement::CreateProcedure { .. }
        | Statement::CreateTrigger(_)
        | Statement::CreateSequence { .. }
        | Statement::CreateDomain(_)
        | Statement::CreateType { .. }
        | Statement::CreateOperator(_)
        | Statement::CreateOperatorFamily(_)
        | Statement::CreateOperatorClass(_)
        | Statement::CreateTextSearch(_)
        | Statement::CreateCollation(_)
        | Statement::AlterTable(_)
        | Statement::AlterSchema(_)
        | Statement::AlterIndex { .. }
        | Statement::AlterView { .. }
        | Statement::AlterFunction(_)
        | Statement::AlterType(_)
        | Statement::AlterCollation(_)
        | Statement::AlterOperator(_)
        | Statement::AlterOperatorFamily(_)
        | Statement::AlterOperatorClass(_)
        | Statement::AlterTextSearch(_)
        | Statement::DropFunction(_)
        | Statement::DropDomain(_)
        | Statement::DropProcedure { .. }
        | Statement::DropTrigger(_)
        | Statement::DropOperator(_)
        | Statement::DropOperatorFamily(_)
        | Statement::DropOperatorClass(_)
        | Statement::Truncate(_)
        | Statement::Comment { .. }
        | Statement::RenameTable(_) => Ddl,
        Statement::Drop { object_type, .. } => match object_type {
            ObjectType::Role | ObjectType::User | ObjectType::Database => Admin,
            ObjectType::Collation
            | ObjectType::Table
            | ObjectType::View
            | ObjectType::MaterializedView
            | ObjectType::Index
            | ObjectType::Schema
            | ObjectType::Sequence
            | ObjectType::Type => Ddl,
            _ => Unknown,
        },

        Statement::Grant(_)
        | Statement::Revoke(_)
        | Statement::CreateRole(_)
        | Statement::CreateUser(_)
        | Statement::AlterRole { .. }
        | Statement::AlterUser(_)
        | Statement::CreateDatabase { .. }
        | Statement::CreateExtension(_)
        | Statement::DropExtension(_)
        | Statement::CreateServer(_)
        | Statement::CreatePolicy(_)
        | Statement::AlterPolicy(_)
        | Statement::DropPolicy(_)
        | Statement::Call(_)
        | Statement::Execute { .. }
        | Statement::Vacuum(_)
        | Statement::Analyze(_)
        | Statement::Load { .. } => Admin,

        _ => Unknown,
    }
}

/// EXPLAIN options that never make PostgreSQL run the statement.
const PLAN_ONLY_OPTIONS: &[&str] = &[
    "verbose",
    "costs",
    "settings",
    "generic_plan",
    "buffers",
    "serialize",
    "wal",
    "timing",
    "summary",
    "memory",
    "format",
];

/// Whether EXPLAIN runs its statement: `ANALYZE` (or `ANALYSE`, which PostgreSQL accepts)
/// unless its value is the keyword `false`/`off`, or any option not known to be plan-only.
/// A literal value (`ANALYZE 0`) counts as yes: literals are not part of the cache key.
pub(crate) fn explain_runs(analyze: bool, options: Option<&[UtilityOption]>) -> bool {
    analyze
        || options.unwrap_or_default().iter().any(|o| {
            let name = o.name.value.to_ascii_lowercase();
            if name == "analyze" || name == "analyse" {
                !matches!(&o.arg, Some(arg) if is_false_keyword(arg))
            } else {
                !PLAN_ONLY_OPTIONS.contains(&name.as_str())
            }
        })
}

fn is_false_keyword(e: &Expr) -> bool {
    match e {
        Expr::Value(v) => matches!(v.value, Value::Boolean(false)),
        Expr::Identifier(i) => i.quote_style.is_none() && i.value.eq_ignore_ascii_case("off"),
        _ => false,
    }
}

fn set_kind(set: &Set) -> SqlKind {
    match set {
        Set::SingleAssignment { variable, .. } => setting_kind(variable),
        Set::ParenthesizedAssignments { variables, .. } => variables
            .iter()
            .map(setting_kind)
            .max()
            .unwrap_or(SqlKind::Unknown),
        Set::MultipleAssignments { assignments } => assignments
            .iter()
            .map(|a| setting_kind(&a.name))
            .max()
            .unwrap_or(SqlKind::Unknown),
        Set::SetTimeZone { .. } | Set::SetTransaction { .. } => SqlKind::Session,
        // SET NAMES changes client_encoding, which changes how the server splits bytes.
        Set::SetNames { .. } | Set::SetNamesDefault {} => SqlKind::Admin,
        Set::SetRole { .. } | Set::SetSessionAuthorization(_) => SqlKind::Admin,
        _ => SqlKind::Unknown,
    }
}

/// Settings that change who we are, what names resolve to, which rules apply, or how later
/// query text is lexed.
const ADMIN_SETTINGS: &[&str] = &[
    "role",
    "session_authorization",
    "standard_conforming_strings",
    "backslash_quote",
    "client_encoding",
    "names",
    "search_path",
    "session_replication_role",
    "row_security",
    "allow_system_table_mods",
    "lo_compat_privileges",
    "session_preload_libraries",
    "local_preload_libraries",
    "dynamic_library_path",
];

fn setting_kind(name: &ObjectName) -> SqlKind {
    match pg_name_parts(name) {
        Some(parts) => setting_parts_kind(&parts),
        None => SqlKind::Unknown,
    }
}

fn setting_parts_kind(parts: &[String]) -> SqlKind {
    match parts {
        [one] if ADMIN_SETTINGS.contains(&one.to_ascii_lowercase().as_str()) => SqlKind::Admin,
        // Ordinary and extension (`ext.param`) settings.
        [_] | [_, _] => SqlKind::Session,
        _ => SqlKind::Unknown,
    }
}

/// The effect of `set_config(name, value, is_local)` as PostgreSQL's own `set_config` (the
/// name unqualified or in `pg_catalog`) called with a literal setting name: that of `SET
/// name`. `None` for any other call, which is judged by name (`set_config` is `Admin`).
///
/// The scanner keeps such a literal in the shape and the cache key (`TokKind::SettingName`);
/// every other literal reaches the parser as `''`, which names no setting.
pub(crate) fn set_config_kind(f: &Function) -> Option<SqlKind> {
    let builtin = match pg_name_parts(&f.name)?.as_slice() {
        [name] => name == "set_config",
        [schema, name] => schema == "pg_catalog" && name == "set_config",
        _ => false,
    };
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    let plain = matches!(f.parameters, FunctionArguments::None)
        && f.over.is_none()
        && f.filter.is_none()
        && f.within_group.is_empty()
        && list.duplicate_treatment.is_none()
        && list.clauses.is_empty();
    if !builtin || !plain {
        return None;
    }
    let [
        FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(name))),
        _,
        _,
    ] = list.args.as_slice()
    else {
        return None;
    };
    let Value::SingleQuotedString(name) = &name.value else {
        return None;
    };
    let valid = |p: &str| {
        p.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    let parts: Vec<String> = name.split('.').map(str::to_ascii_lowercase).collect();
    parts
        .iter()
        .all(|p| valid(p))
        .then(|| setting_parts_kind(&parts))
}

/// Functions whose call changes the server, reads server files, runs SQL given as text, or
/// reads tables not named in the query.
const ADMIN_FUNCTIONS: &[&str] = &[
    "pg_read_file",
    "pg_read_binary_file",
    "pg_stat_file",
    "pg_ls_dir",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "set_config",
    "pg_drop_replication_slot",
    "pg_replication_slot_advance",
    "pg_switch_wal",
    "pg_promote",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_start_backup",
    "pg_stop_backup",
    "pg_create_restore_point",
    "pg_wal_replay_pause",
    "pg_wal_replay_resume",
    "pg_log_backend_memory_contexts",
    "pg_import_system_collations",
    "pg_extension_config_dump",
    "pg_stat_statements_reset",
    "lowrite",
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "cursor_to_xml",
    "cursor_to_xmlschema",
    "ts_stat",
    "ts_rewrite",
];

/// Prefixes of families of such functions.
const ADMIN_PREFIXES: &[&str] = &[
    "pg_ls_",
    "pg_file_",
    "pg_advisory_",
    "pg_try_advisory_",
    "pg_logical_",
    "pg_replication_origin_",
    "pg_stat_reset",
    "pg_rotate_logfile",
    "dblink",
    "lo_",
    "table_to_xml",
    "schema_to_xml",
    "database_to_xml",
    "binary_upgrade_",
];

/// The effect of calling a function, by name: `Some(Read)` for a built-in free of side
/// effects, the kind of a function with known effects, `None` for any other function (one
/// the classifier cannot vouch for, decided as `sql.call`).
pub(crate) fn function_kind(name: &ObjectName) -> Option<SqlKind> {
    let Some(mut parts) = pg_name_parts(name) else {
        return Some(SqlKind::Unknown);
    };
    let Some(f) = parts.pop() else {
        return Some(SqlKind::Unknown);
    };
    if let Some(kind) = effect_by_name(&f) {
        return Some(kind);
    }
    is_pure(parts.last().map(String::as_str), &f).then_some(SqlKind::Read)
}

/// The kind of a function with known effects, by its last name part as PostgreSQL folds it
/// (any schema: a function of the same name elsewhere is treated alike). A quoted name with
/// capitals is some other function.
pub(crate) fn effect_by_name(f: &str) -> Option<SqlKind> {
    if f.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    if f == "nextval" || f == "setval" || f == "pg_notify" {
        return Some(SqlKind::Write);
    }
    // Reading a large object is a read; every other lo_* call creates, changes or exports one.
    if f == "lo_get" {
        return Some(SqlKind::Read);
    }
    let slot = f.starts_with("pg_create_") && f.contains("slot")
        || f.starts_with("pg_copy_") && f.ends_with("_slot");
    (slot || ADMIN_FUNCTIONS.contains(&f) || ADMIN_PREFIXES.iter().any(|p| f.starts_with(p)))
        .then_some(SqlKind::Admin)
}

/// Utility statements that `sqlparser` does not model but whose first words identify them
/// as administrative.
pub(crate) fn utility_kind(first: &str, second: Option<&str>) -> Option<SqlKind> {
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let admin = [
        "do",
        "checkpoint",
        "cluster",
        "reindex",
        "load",
        "vacuum",
        "analyze",
    ]
    .iter()
    .any(|w| eq(first, w))
        || (eq(first, "alter") && second.is_some_and(|s| eq(s, "system")))
        || (eq(first, "security") && second.is_some_and(|s| eq(s, "label")))
        || (eq(first, "import") && second.is_some_and(|s| eq(s, "foreign")));
    admin.then_some(SqlKind::Admin)
}
