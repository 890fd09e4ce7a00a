//! `portcullis approvals …`: the approval queue, through the gateway's admin API. The caller
//! is an identity like any other: its token (or access key) goes in `--token` or
//! `PORTCULLIS_TOKEN`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// Where the admin API is and who is calling.
#[derive(Args)]
pub struct Endpoint {
    /// Admin URL of the gateway (default: from `--config`, else http://127.0.0.1:8080).
    #[arg(long, env = "PORTCULLIS_ADMIN_URL", global = true)]
    gateway: Option<String>,
    /// The gateway's config, to find its admin listener.
    #[arg(long, short, env = "PORTCULLIS_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Your token or access key.
    #[arg(long, env = "PORTCULLIS_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Print the gateway's JSON answer instead of a summary.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
pub enum ApprovalsCommand {
    /// List requests (the newest last).
    List {
        /// pending, approved, denied, expired, cancelled or abandoned.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        connection: Option<String>,
        /// Requests by this principal or subject.
        #[arg(long)]
        requester: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Show one request with its votes.
    Show { id: String },
    /// Approve a request.
    Approve {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deny a request.
    Deny {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Withdraw your own request (or end your granted window early).
    Cancel {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Ask for a time window: matching commands pass without holding once it is granted.
    Request {
        #[arg(long)]
        connection: String,
        /// The action, e.g. `sql.write`.
        #[arg(long)]
        action: String,
        /// How long, e.g. 30m.
        #[arg(long = "for")]
        duration: String,
        #[arg(long)]
        reason: String,
    },
}

pub fn run(endpoint: Endpoint, cmd: ApprovalsCommand) -> anyhow::Result<ExitCode> {
    let base = match (&endpoint.gateway, &endpoint.config) {
        (Some(url), _) => url.trim_end_matches('/').to_string(),
        (None, Some(path)) => {
            let cfg = gateway_core::config::Config::load(path).map_err(|e| anyhow::anyhow!(e))?;
            format!("http://{}", cfg.gateway.admin_listen)
        }
        (None, None) => "http://127.0.0.1:8080".to_string(),
    };
    let token = endpoint
        .token
        .clone()
        .context("a token is required: --token or PORTCULLIS_TOKEN")?;
    let (method, path, body) = match &cmd {
        ApprovalsCommand::List {
            state,
            connection,
            requester,
            limit,
        } => {
            let mut q = Vec::new();
            for (k, v) in [
                ("state", state.clone()),
                ("connection", connection.clone()),
                ("requester", requester.clone()),
                ("limit", limit.map(|n| n.to_string())),
            ] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", encode(&v)));
                }
            }
            let query = if q.is_empty() {
                String::new()
            } else {
                format!("?{}", q.join("&"))
            };
            ("GET", format!("/v1/approvals{query}"), None)
        }
        ApprovalsCommand::Show { id } => ("GET", format!("/v1/approvals/{}", encode(id)), None),
        ApprovalsCommand::Approve { id, reason } => (
            "POST",
            format!("/v1/approvals/{}/approve", encode(id)),
            Some(json!({ "reason": reason })),
        ),
        ApprovalsCommand::Deny { id, reason } => (
            "POST",
            format!("/v1/approvals/{}/deny", encode(id)),
            Some(json!({ "reason": reason })),
        ),
        ApprovalsCommand::Cancel { id, reason } => (
            "POST",
            format!("/v1/approvals/{}/cancel", encode(id)),
            Some(json!({ "reason": reason })),
        ),
        ApprovalsCommand::Request {
            connection,
            action,
            duration,
            reason,
        } => (
            "POST",
            "/v1/approvals".to_string(),
            Some(
                json!({ "connection": connection, "action": action, "for": duration, "reason": reason }),
            ),
        ),
    };
    crate::serve::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let url = format!("{base}{path}");
    let (status, answer) = rt.block_on(async {
        let client = reqwest::Client::new();
        let req = match method {
            "GET" => client.get(&url),
            _ => client.post(&url).json(&body.unwrap_or(Value::Null)),
        };
        let resp = req
            .bearer_auth(token.trim())
            .send()
            .await
            .with_context(|| format!("calling {url}"))?;
        let status = resp.status();
        let answer: Value = resp.json().await.context("reading the answer")?;
        anyhow::Ok((status, answer))
    })?;
    if !status.is_success() {
        let msg = answer
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("unknown error");
        eprintln!("error: {msg}");
        return Ok(ExitCode::FAILURE);
    }
    if endpoint.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(ExitCode::SUCCESS);
    }
    match answer {
        Value::Array(reqs) => {
            if reqs.is_empty() {
                println!("no requests");
            }
            for r in &reqs {
                println!("{}", summary(r));
            }
        }
        r => {
            println!("{}", summary(&r));
            if let Some(tables) = r.pointer("/kind/tables").and_then(Value::as_array) {
                let names: Vec<&str> = tables.iter().filter_map(Value::as_str).collect();
                println!("  tables: {}", names.join(", "));
            }
            if let Some(votes) = r.get("votes").and_then(Value::as_array) {
                for v in votes {
                    let verb = if v.get("approve").and_then(Value::as_bool) == Some(true) {
                        "approved"
                    } else {
                        "denied"
                    };
                    let reason = v
                        .get("reason")
                        .and_then(Value::as_str)
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default();
                    println!("  {verb} by {}{reason}", text(v, "who"));
                }
            }
            if let Some(why) = r.get("closed_reason").and_then(Value::as_str) {
                println!("  {why}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("-")
}

/// One line per request: id, state, who, where, what, and the vote count.
fn summary(r: &Value) -> String {
    let requester = r
        .pointer("/requester/principal")
        .and_then(Value::as_str)
        .unwrap_or("-");
    let what = match r.pointer("/kind/statement").and_then(Value::as_str) {
        Some(stmt) => match r.pointer("/kind/parameters").and_then(Value::as_array) {
            Some(params) if !params.is_empty() => format!("{stmt}  {}", parameter_list(params)),
            _ => stmt.to_string(),
        },
        None => r
            .pointer("/kind/window_secs")
            .and_then(Value::as_u64)
            .map(|s| format!("window of {s}s"))
            .unwrap_or_else(|| "-".to_string()),
    };
    let votes = r.get("votes").and_then(Value::as_array).map_or(0, |v| {
        v.iter()
            .filter(|v| v.get("approve").and_then(Value::as_bool) == Some(true))
            .count()
    });
    let required = r.get("required").and_then(Value::as_u64).unwrap_or(1);
    format!(
        "{}  {:<9} {}  {}  {}  {votes}/{required}  {what}",
        text(r, "id"),
        text(r, "state"),
        requester,
        text(r, "connection"),
        text(r, "action"),
    )
}

/// `[$1 = '0', $2 = NULL]`: bound parameters as stored (already masked).
fn parameter_list(params: &[Value]) -> String {
    let shown: Vec<String> = params
        .iter()
        .enumerate()
        .map(|(i, p)| match p.as_str() {
            Some(v) => format!("${} = '{}'", i + 1, v.replace('\'', "''")),
            None => format!("${} = NULL", i + 1),
        })
        .collect();
    format!("[{}]", shown.join(", "))
}

/// Percent-encode a path segment or query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
