//! `portcullis`: the gateway binary and its command line.
#![forbid(unsafe_code)]

mod admin;
mod admin_approvals;
mod cli_approvals;
mod cli_audit;
mod cli_kube;
mod cli_policy;
mod cli_token;
mod private;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Identity-aware access gateway for databases, hosts, clusters and APIs.
#[derive(Parser)]
#[command(name = "portcullis", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the listeners, admin API and audit sinks the config names.
    Serve {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Mint and exchange tokens.
    Token {
        #[command(subcommand)]
        command: cli_token::TokenCommand,
    },
    /// The approval queue: list, show, approve, deny, cancel, request a window.
    Approvals {
        #[command(flatten)]
        endpoint: cli_approvals::Endpoint,
        #[command(subcommand)]
        command: cli_approvals::ApprovalsCommand,
    },
    /// Read and verify the audit trail.
    Audit {
        #[command(subcommand)]
        command: cli_audit::AuditCommand,
    },
    /// Recorded sessions.
    Sessions {
        #[command(subcommand)]
        command: cli_audit::SessionsCommand,
    },
    /// Replay a recorded session as a transcript with its timing.
    Replay(cli_audit::ReplayArgs),
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: cli_policy::PolicyCommand,
    },
    /// Write a kubeconfig that points kubectl at the gateway for one connection.
    Kubeconfig(cli_kube::KubeconfigArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the config and its policy; print every problem with its path.
    Check {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    private::restrict_new_files();
    let result = match cli.command {
        Command::Serve { config } => serve::run(&config),
        Command::Config {
            command: ConfigCommand::Check { config },
        } => config_check(&config),
        Command::Token { command } => cli_token::run(command),
        Command::Approvals { endpoint, command } => cli_approvals::run(endpoint, command),
        Command::Audit { command } => cli_audit::run_audit(command),
        Command::Sessions { command } => cli_audit::run_sessions(command),
        Command::Replay(args) => cli_audit::run_replay(args),
        Command::Policy { command } => cli_policy::run(command),
        Command::Kubeconfig(args) => cli_kube::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portcullis: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Load a config and fail with every problem listed. The targets' secrets are not needed:
/// only verbs that connect to targets (`serve`) check them, with
/// [`load_config_with_secrets`].
pub(crate) fn load_config(path: &std::path::Path) -> anyhow::Result<gateway_core::config::Config> {
    load(path, false)
}

/// [`load_config`], and every secret the gateway holds must be readable.
/// What each protocol's proxy checks in its connections.
const CONNECTION_CHECKS: &[(
    gateway_core::config::Protocol,
    gateway_core::ConnectionCheck,
)] = &[
    (
        gateway_core::config::Protocol::Postgres,
        proxy_postgres::check::connection_problems,
    ),
    (
        gateway_core::config::Protocol::Ssh,
        proxy_ssh::check::connection_problems,
    ),
    (
        gateway_core::config::Protocol::Tds,
        proxy_tds::check::connection_problems,
    ),
    (
        gateway_core::config::Protocol::Http,
        proxy_http::check::connection_problems,
    ),
    (
        gateway_core::config::Protocol::Kube,
        proxy_kube::check::connection_problems,
    ),
];

pub(crate) fn load_config_with_secrets(
    path: &std::path::Path,
) -> anyhow::Result<gateway_core::config::Config> {
    load(path, true)
}

fn load(path: &std::path::Path, secrets: bool) -> anyhow::Result<gateway_core::config::Config> {
    let cfg = gateway_core::config::Config::load(path).map_err(anyhow::Error::msg)?;
    let mut problems = gateway_core::check_config(&cfg, CONNECTION_CHECKS);
    if secrets {
        problems.extend(cfg.secret_problems());
    }
    if !problems.is_empty() {
        anyhow::bail!(
            "{}: invalid configuration:\n  {}",
            path.display(),
            problems.join("\n  ")
        );
    }
    Ok(cfg)
}

fn config_check(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let cfg = match gateway_core::config::Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut problems = gateway_core::check_config(&cfg, CONNECTION_CHECKS);
    problems.extend(cfg.secret_problems());
    let policy_path = cfg.resolve(&cfg.gateway.policy);
    if policy_path.is_file() {
        match gateway_core::policy::PolicyHandle::load(&policy_path) {
            Ok(handle) => problems.extend(
                handle
                    .current()
                    .approver_problems(&cfg.approvals.approvers)
                    .into_iter()
                    .map(|e| format!("gateway.policy: {e}")),
            ),
            Err(errs) => problems.extend(errs.into_iter().map(|e| format!("gateway.policy: {e}"))),
        }
    }
    if problems.is_empty() {
        println!("{}: ok", path.display());
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &problems {
            eprintln!("{p}");
        }
        eprintln!("{} problem(s) in {}", problems.len(), path.display());
        Ok(ExitCode::FAILURE)
    }
}
