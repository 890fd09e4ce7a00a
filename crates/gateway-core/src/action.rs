//! Protocol-neutral descriptions of what a caller asks to do.

use std::sync::Arc;

/// One command, described without reference to its wire protocol.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// Opening a session on a connection.
    Connect,
    /// One SQL statement.
    Sql(Arc<SqlStatement>),
    /// An SSH channel request: a shell, a command, the sftp subsystem or a forward.
    Ssh(SshRequest),
}

impl Action {
    /// The Cedar action id, e.g. `connect`, `sql.read`.
    pub fn cedar_id(&self) -> &'static str {
        match self {
            Action::Connect => "connect",
            Action::Sql(s) => s.kind.cedar_id(),
            Action::Ssh(r) => r.kind.cedar_id(),
        }
    }
}

/// The effect class of one SQL statement, worst effect wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SqlKind {
    /// Reads data only.
    Read,
    /// Session settings with no data effect (SET of a harmless parameter, BEGIN, COMMIT...).
    Session,
    /// Changes rows (INSERT, UPDATE, DELETE, MERGE, COPY FROM, SELECT INTO...).
    Write,
    /// Calls a function the gateway cannot vouch for (a user-defined one, say): it may do
    /// anything its owner wrote, so it is decided by name (`context.functions`).
    Call,
    /// Changes schema (CREATE, ALTER, DROP, TRUNCATE...).
    Ddl,
    /// Changes privileges, roles, server state, or runs code/programs on the server.
    Admin,
    /// Could not be understood: never treated as a read.
    Unknown,
}

impl SqlKind {
    /// The Cedar action id for this kind.
    pub fn cedar_id(self) -> &'static str {
        match self {
            SqlKind::Read => "sql.read",
            SqlKind::Session => "sql.session",
            SqlKind::Write => "sql.write",
            SqlKind::Call => "sql.call",
            SqlKind::Ddl => "sql.ddl",
            SqlKind::Admin => "sql.admin",
            SqlKind::Unknown => "sql.unknown",
        }
    }
}

/// One classified SQL statement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SqlStatement {
    /// Worst effect of the statement.
    pub kind: SqlKind,
    /// Lower-case names of the tables it touches (unqualified and schema-qualified both
    /// appear as written, lower-cased; e.g. `orders`, `public.orders`).
    pub tables: Vec<String>,
    /// An UPDATE or DELETE without a WHERE clause.
    pub unbounded: bool,
    /// The normalised shape: literals replaced by `?`, keywords lower-cased, whitespace
    /// and comments collapsed.
    pub shape: String,
    /// Functions called that the gateway cannot vouch for, lower-case, as written
    /// (`refresh_totals`, `app.refresh_totals`); non-empty makes the kind at least `Call`.
    pub functions: Vec<String>,
    /// Whether the statement parsed; `false` implies `kind == Unknown`.
    pub parsed: bool,
    /// Why the statement was too deep or too large to analyse. Such a statement is refused
    /// with this reason whatever policy says (`kind == Unknown`, `parsed == false`).
    pub refusal: Option<&'static str>,
}

/// What an SSH channel asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SshKind {
    /// An interactive shell (`shell` request).
    Shell,
    /// One command (`exec` request).
    Exec,
    /// The sftp subsystem (sftp, and scp, which uses sftp).
    Sftp,
    /// Port or agent forwarding.
    Forward,
}

impl SshKind {
    /// The Cedar action id for this kind.
    pub fn cedar_id(self) -> &'static str {
        match self {
            SshKind::Shell => "ssh.shell",
            SshKind::Exec => "ssh.exec",
            SshKind::Sftp => "ssh.sftp",
            SshKind::Forward => "ssh.forward",
        }
    }
}

/// One SSH channel request as policy sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SshRequest {
    pub kind: SshKind,
    /// The exec command line, or what a forward reaches (`host:port`); policy's
    /// `context.command`.
    pub command: Option<Arc<str>>,
}
