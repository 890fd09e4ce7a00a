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
    /// A Kubernetes API request.
    Kube(Arc<KubeRequest>),
    /// An HTTP API request.
    Http(Arc<HttpRequest>),
}

impl Action {
    /// The Cedar action id, e.g. `connect`, `sql.read`.
    pub fn cedar_id(&self) -> &'static str {
        match self {
            Action::Connect => "connect",
            Action::Sql(s) => s.kind.cedar_id(),
            Action::Ssh(r) => r.kind.cedar_id(),
            Action::Kube(r) => r.verb.cedar_id(),
            Action::Http(r) => r.kind.cedar_id(),
        }
    }
}

/// A Kubernetes API verb, as the API server derives it from method, path and query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KubeVerb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
    Exec,
    Attach,
    PortForward,
    Proxy,
}

impl KubeVerb {
    /// The Cedar action id, e.g. `kube.get`.
    pub fn cedar_id(self) -> &'static str {
        match self {
            KubeVerb::Get => "kube.get",
            KubeVerb::List => "kube.list",
            KubeVerb::Watch => "kube.watch",
            KubeVerb::Create => "kube.create",
            KubeVerb::Update => "kube.update",
            KubeVerb::Patch => "kube.patch",
            KubeVerb::Delete => "kube.delete",
            KubeVerb::DeleteCollection => "kube.deletecollection",
            KubeVerb::Exec => "kube.exec",
            KubeVerb::Attach => "kube.attach",
            KubeVerb::PortForward => "kube.portforward",
            KubeVerb::Proxy => "kube.proxy",
        }
    }
}

/// One Kubernetes API request as policy sees it; parts a request does not have are `None`
/// (a cluster-scoped resource has no namespace, a list no name).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KubeRequest {
    pub verb: KubeVerb,
    pub resource: Option<String>,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// API group; empty for the core group.
    pub group: Option<String>,
    /// A non-resource request's path (discovery, `/version`, `/openapi/v3`).
    pub path: Option<String>,
    /// `exec`: the command and its arguments, joined by spaces.
    pub command: Option<String>,
}

impl KubeRequest {
    /// The policy context's fields (`context.resource` …) and their values.
    pub fn fields(&self) -> [(&'static str, &Option<String>); 7] {
        [
            ("resource", &self.resource),
            ("subresource", &self.subresource),
            ("namespace", &self.namespace),
            ("name", &self.name),
            ("group", &self.group),
            ("path", &self.path),
            ("command", &self.command),
        ]
    }
}

/// The effect class of an HTTP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpKind {
    /// GET, HEAD, OPTIONS.
    Read,
    /// POST, PUT, PATCH and any other method.
    Write,
    /// DELETE.
    Delete,
}

impl HttpKind {
    /// The class of `method` (case-insensitive); unknown methods count as writes.
    pub fn of_method(method: &str) -> HttpKind {
        match method.to_ascii_uppercase().as_str() {
            "GET" | "HEAD" | "OPTIONS" => HttpKind::Read,
            "DELETE" => HttpKind::Delete,
            _ => HttpKind::Write,
        }
    }

    /// The Cedar action id, e.g. `http.read`.
    pub fn cedar_id(self) -> &'static str {
        match self {
            HttpKind::Read => "http.read",
            HttpKind::Write => "http.write",
            HttpKind::Delete => "http.delete",
        }
    }
}

/// One HTTP request as policy sees it. `path` is normalised by the proxy before it gets
/// here (percent-decoding, dot segments, repeated slashes), so a rule on it cannot be dodged
/// by spelling.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpRequest {
    pub kind: HttpKind,
    pub method: String,
    pub path: String,
    pub host: String,
    /// The query normalised the same way: parameters percent-decoded, sorted by name then
    /// value, `name=value` joined by `&` (empty when there is none).
    pub query: String,
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
    /// The output columns of a plain `SELECT` (one query block, no set operation), in order,
    /// as the statement names them; `None` for anything else. Masking uses it to tell a
    /// column passed through (perhaps renamed) from a value computed from columns.
    pub outputs: Option<Vec<Output>>,
    /// What the statement trusts by name alone (built-in functions called unqualified,
    /// `t.f` taken for columns, operators, casts): the target's catalog can make any of them
    /// a user function (see [`crate::sql::CatalogFacts`]).
    pub by_name: ByName,
}

/// References a statement resolves by name only, so a user-defined function of the same
/// name, operator symbol or cast target type can stand behind them. Empty for T-SQL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ByName {
    /// Allow-listed functions called without a schema, lower-case (`lower`).
    pub functions: Vec<String>,
    /// Last parts of qualified names taken for columns (`f` of `t.f`), lower-case.
    pub attributes: Vec<String>,
    /// Operator symbols written or implied (`=` for `IN`, `~~` for `LIKE`, `<` for ORDER BY).
    pub operators: Vec<String>,
    /// Type names of explicit casts (`x::mytype`), last part, lower-case.
    pub casts: Vec<String>,
}

impl ByName {
    /// Nothing is trusted by name.
    pub fn is_empty(&self) -> bool {
        self.functions.is_empty()
            && self.attributes.is_empty()
            && self.operators.is_empty()
            && self.casts.is_empty()
    }
}

/// Where one output column of a `SELECT` comes from, read from the statement alone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Output {
    /// A column reference (`card`, `c.card`), lower-case, perhaps renamed by `alias`.
    Column { name: String, alias: Option<String> },
    /// `*` or `t.*`: columns under their own names.
    Wildcard,
    /// Computed (functions, operators, casts, literals), perhaps named by `alias`.
    Expr {
        alias: Option<String>,
        /// The names of the columns it reads (last part, lower-case).
        reads: Vec<String>,
        /// It holds a subquery, so it may read columns of tables outside `FROM`.
        opaque: bool,
        /// Tables (as `FROM` names them, lower-case) whose whole rows it reads: `to_jsonb(c)`,
        /// `c::text`, `row(c.*)` for `FROM customers c`.
        rows: Vec<String>,
        /// It is a bare reference to one table's whole row (`SELECT c FROM customers c`):
        /// the row as stored, typed as the table's row type, so a client-side reader of
        /// that type can judge each field as its column.
        bare: bool,
    },
}

impl SqlStatement {
    /// The worst kind among `statements` (`Unknown` when there are none).
    pub fn worst_kind(statements: &[Arc<SqlStatement>]) -> SqlKind {
        statements
            .iter()
            .map(|s| s.kind)
            .max()
            .unwrap_or(SqlKind::Unknown)
    }

    /// Every table `statements` touch, sorted, each once.
    pub fn tables_of(statements: &[Arc<SqlStatement>]) -> Vec<String> {
        let mut tables: Vec<String> = statements
            .iter()
            .flat_map(|s| s.tables.iter().cloned())
            .collect();
        tables.sort();
        tables.dedup();
        tables
    }
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
    /// For an exec line: one simple command of it, and what the whole line runs.
    pub exec: Option<ExecPart>,
}

/// What an exec line runs, as the shell parser sees it (see [`crate::shell`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ExecLine {
    /// Every program's basename, in order of appearance, once each.
    pub programs: Vec<String>,
    /// Why the line cannot be fully known before it runs; empty when it can.
    pub opaque: Vec<String>,
}

/// One simple command of an exec line: each is decided, and the line runs only if every
/// one is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExecPart {
    pub line: Arc<ExecLine>,
    /// The program's basename; `None` for a line that runs no program.
    pub program: Option<String>,
    /// Its arguments, unquoted.
    pub args: Vec<String>,
}

impl SshRequest {
    /// A request that is not an exec line (shell, sftp, forward).
    pub fn new(kind: SshKind, command: Option<Arc<str>>) -> SshRequest {
        SshRequest {
            kind,
            command,
            exec: None,
        }
    }

    /// The actions an exec command line is decided as: one per simple command it runs
    /// (one without a program if it runs none), each carrying the raw line and what the
    /// whole line runs.
    pub fn exec(line: Arc<str>) -> Vec<Action> {
        let parsed = crate::shell::analyse(&line);
        let info = Arc::new(ExecLine {
            programs: parsed.programs,
            opaque: parsed.opaque,
        });
        let part = |program: Option<String>, args: Vec<String>| {
            Action::Ssh(SshRequest {
                kind: SshKind::Exec,
                command: Some(line.clone()),
                exec: Some(ExecPart {
                    line: info.clone(),
                    program,
                    args,
                }),
            })
        };
        if parsed.commands.is_empty() {
            return vec![part(None, Vec::new())];
        }
        parsed
            .commands
            .into_iter()
            .map(|(program, args)| part(Some(program), args))
            .collect()
    }
}
