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
        /// A SQL statement to classify (its kind, tables and shape become the action and context).
        #[arg(long)]
        sql: Option<String>,
        /// Context as JSON, e.g. '{"tables":["orders"],"unbounded":false}'.
        #[arg(long)]
        context: Option<String>,
    },
}

pub fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    let PolicyCommand::Test { config, who, issuer, groups, connection, action, sql, context } = cmd;
    let cfg = crate::load_config(&config)?;
    let conn = cfg
        .connection(&connection)
        .ok_or_else(|| anyhow::anyhow!("connection `{connection}` is not in the config"))?;
    let path = cfg.resolve(&cfg.gateway.policy);
    let handle = gateway_core::policy::PolicyHandle::load(&path)
        .map_err(|errs| anyhow::anyhow!("{}: invalid policy:\n  {}", path.display(), errs.join("\n  ")))?;
    let context = match context {
        Some(c) => Some(serde_json::from_str::<serde_json::Value>(&c).map_err(|e| anyhow::anyhow!("--context: {e}"))?),
        None => None,
    };
    let explanation = gateway_core::policy::explain(
        &handle.current(),
        &issuer,
        &who,
        &groups,
        conn,
        &action,
        sql.as_deref(),
        context.as_ref(),
    )
    .map_err(anyhow::Error::msg)?;
    println!("{explanation}");
    Ok(if explanation.allowed() { ExitCode::SUCCESS } else { ExitCode::from(2) })
}
