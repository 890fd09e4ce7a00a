//! `portcullis policy test`: explain one decision.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Explain the decision for one identity, connection and action.
    Test {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        /// Subject of the identity.
        #[arg(long)]
        who: String,
        /// Issuer name of the identity.
        #[arg(long, default_value = "builtin")]
        issuer: String,
        /// A group of the identity (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Connection name.
        #[arg(long)]
        connection: String,
        /// Action id, e.g. `sql.write`, `connect`; or `sql` with --sql to classify a statement.
        #[arg(long)]
        action: String,
        /// A SQL statement to classify (its kind, tables and shape become the action and
        /// context), in the connection's dialect: T-SQL for a tds connection, else PostgreSQL.
        #[arg(long)]
        sql: Option<String>,
        /// An SSH exec command line to parse as the proxy does: each simple command in it
        /// is explained as `ssh.exec`, and the line passes only if each one does.
        #[arg(long, conflicts_with_all = ["sql", "context"])]
        exec: Option<String>,
        /// An HTTP request, `METHOD /path?query` (below the connection prefix), read as the
        /// HTTP gateway reads it: the path normalised (lower-cased for a case-insensitive
        /// connection), the action by method, the host the target's.
        #[arg(long, conflicts_with_all = ["sql", "exec", "context"])]
        http: Option<String>,
        /// A Kubernetes API request, `METHOD /path?query` (below the connection prefix), read
        /// as the kube gateway reads it: `kube.<verb>` with resource, namespace, name …
        #[arg(long, conflicts_with_all = ["sql", "exec", "context", "http"])]
        kube: Option<String>,
        /// Context as JSON, e.g. '{"tables":["orders"],"unbounded":false}'.
        #[arg(long)]
        context: Option<String>,
    },
}

pub fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    let PolicyCommand::Test {
        config,
        who,
        issuer,
        groups,
        connection,
        action,
        sql,
        exec,
        http,
        kube,
        context,
    } = cmd;
    let cfg = crate::load_config(&config)?;
    let conn = cfg
        .connection(&connection)
        .ok_or_else(|| anyhow::anyhow!("connection `{connection}` is not in the config"))?;
    let path = cfg.resolve(&cfg.gateway.policy);
    let handle = gateway_core::policy::PolicyHandle::load(&path).map_err(|errs| {
        anyhow::anyhow!(
            "{}: invalid policy:\n  {}",
            path.display(),
            errs.join("\n  ")
        )
    })?;
    let mut context = match context {
        Some(c) => Some(
            serde_json::from_str::<serde_json::Value>(&c)
                .map_err(|e| anyhow::anyhow!("--context: {e}"))?,
        ),
        None => None,
    };
    let claims = std::collections::BTreeMap::new();
    let principal = gateway_core::policy::PrincipalRef {
        issuer: &issuer,
        subject: &who,
        groups: &groups,
        claims: &claims,
    };
    let conn_ref = gateway_core::policy::ConnectionRef {
        name: &conn.name,
        protocol: conn.protocol,
    };
    if let Some(line) = exec {
        return explain_exec(&handle, &principal, &conn_ref, &line);
    }
    let mut action = action;
    if let Some(req) = http {
        let (a, c) = http_request(conn, &req)?;
        action = a;
        context = Some(c);
    }
    if let Some(req) = kube {
        let (a, c) = kube_request(&req)?;
        action = a;
        context = Some(c);
    }
    if let Some(sql) = sql {
        // Classify the statement as the connection's proxy would (T-SQL for a tds
        // connection) and decide on its worst effect.
        let dialect = match conn.protocol {
            gateway_core::config::Protocol::Tds => gateway_core::sql::Dialect::TSql,
            _ => gateway_core::sql::Dialect::Postgres,
        };
        let statements = gateway_core::sql::classify_uncached(
            &sql,
            gateway_core::sql::LexOptions {
                dialect,
                ..Default::default()
            },
        );
        let worst = statements
            .iter()
            .max_by_key(|s| s.kind)
            .ok_or_else(|| anyhow::anyhow!("--sql: no statement in `{sql}`"))?;
        let mut tables: Vec<&str> = statements
            .iter()
            .flat_map(|s| s.tables.iter().map(String::as_str))
            .collect();
        tables.sort();
        tables.dedup();
        println!(
            "statement classified as {} (tables: {}, unbounded: {})",
            worst.kind.cedar_id(),
            if tables.is_empty() {
                "none".to_string()
            } else {
                tables.join(", ")
            },
            statements.iter().any(|s| s.unbounded)
        );
        action = worst.kind.cedar_id().to_string();
        let mut functions: Vec<&str> = statements
            .iter()
            .flat_map(|s| s.functions.iter().map(String::as_str))
            .collect();
        functions.sort();
        functions.dedup();
        if !functions.is_empty() {
            println!("calls functions: {}", functions.join(", "));
        }
        context = Some(serde_json::json!({
            "tables": tables,
            "unbounded": statements.iter().any(|s| s.unbounded),
            "statement": worst.shape,
            "functions": functions,
        }));
    }
    let explanation = handle
        .current()
        .explain(&principal, &conn_ref, &action, context.as_ref())
        .map_err(anyhow::Error::msg)?;
    println!("{explanation}");
    Ok(if explanation.decision.is_allowed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// `policy test --exec LINE`: the line parsed as the SSH proxy parses it, each simple command
/// explained; exit 0 only if every one is allowed.
fn explain_exec(
    handle: &gateway_core::policy::PolicyHandle,
    who: &gateway_core::policy::PrincipalRef<'_>,
    conn: &gateway_core::policy::ConnectionRef<'_>,
    line: &str,
) -> anyhow::Result<ExitCode> {
    use gateway_core::action::{Action, SshRequest};
    let actions = SshRequest::exec(std::sync::Arc::from(line));
    let engine = handle.current();
    let mut allowed = true;
    for (i, action) in actions.iter().enumerate() {
        let Action::Ssh(SshRequest {
            exec: Some(exec), ..
        }) = action
        else {
            continue;
        };
        if i == 0 {
            println!("runs: {}", exec.line.programs.join(", "));
            if !exec.line.opaque.is_empty() {
                println!(
                    "cannot be checked before it runs: {}",
                    exec.line.opaque.join(", ")
                );
            }
        }
        let program = exec.program.clone().unwrap_or_default();
        println!("command {}: {program} {}", i + 1, exec.args.join(" "));
        let context = serde_json::json!({
            "command": line,
            "program": program,
            "args": exec.args.join(" "),
            "argv": exec.args,
            "programs": exec.line.programs,
            "opaque": !exec.line.opaque.is_empty(),
        });
        let explanation = engine
            .explain(who, conn, "ssh.exec", Some(&context))
            .map_err(anyhow::Error::msg)?;
        println!("{explanation}");
        allowed &= explanation.decision.is_allowed();
    }
    Ok(if allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// The action and context the HTTP gateway decides `req` (`METHOD /path?query`) on.
fn http_request(
    conn: &gateway_core::config::ConnectionConfig,
    req: &str,
) -> anyhow::Result<(String, serde_json::Value)> {
    let (method, target) = req
        .trim()
        .split_once(' ')
        .ok_or_else(|| anyhow::anyhow!("--http: expected `METHOD /path`, got `{req}`"))?;
    let (raw, query) = target.trim().split_once('?').unwrap_or((target.trim(), ""));
    let n = proxy_http::path::normalise(raw).map_err(|e| anyhow::anyhow!("--http: {e}"))?;
    let query =
        proxy_http::path::normalise_query(query).map_err(|e| anyhow::anyhow!("--http: {e}"))?;
    let settings = conn.http.clone().unwrap_or_default();
    let path = if settings.case_insensitive {
        n.decoded.to_lowercase()
    } else {
        n.decoded
    };
    let host = settings
        .host
        .unwrap_or_else(|| proxy_http::route::host_name(&conn.target));
    let method = method.to_ascii_uppercase();
    let kind = gateway_core::action::HttpKind::of_method(&method);
    println!(
        "request read as {method} {path} on {host} ({})",
        kind.cedar_id()
    );
    Ok((
        kind.cedar_id().to_string(),
        serde_json::json!({ "method": method, "path": path, "host": host, "query": query }),
    ))
}

/// The action and context the kube gateway decides `req` (`METHOD /path?query`) on.
fn kube_request(req: &str) -> anyhow::Result<(String, serde_json::Value)> {
    let (method, target) = req
        .trim()
        .split_once(' ')
        .ok_or_else(|| anyhow::anyhow!("--kube: expected `METHOD /path`, got `{req}`"))?;
    let (raw, query) = target.trim().split_once('?').unwrap_or((target.trim(), ""));
    let n = proxy_http::path::normalise(raw).map_err(|e| anyhow::anyhow!("--kube: {e}"))?;
    let pairs = proxy_http::path::query_pairs(query).map_err(|e| anyhow::anyhow!("--kube: {e}"))?;
    let method = method.to_ascii_uppercase();
    let r = proxy_kube::info::request_info(&method, &n.decoded, &pairs)
        .map_err(|e| anyhow::anyhow!("--kube: {e}"))?;
    let mut context = serde_json::Map::new();
    for (k, v) in r.fields() {
        if let Some(v) = v {
            context.insert(k.to_string(), v.clone().into());
        }
    }
    let context = serde_json::Value::Object(context);
    println!("request read as {} {context}", r.verb.cedar_id());
    Ok((r.verb.cedar_id().to_string(), context))
}
