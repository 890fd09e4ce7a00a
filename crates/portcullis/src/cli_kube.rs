//! `portcullis kubeconfig`: a kubeconfig for kubectl through the gateway, and the exec
//! credential plugin it names.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use gateway_core::config::Protocol;
use proxy_kube::kubeconfig::{KubeconfigSpec, TokenFrom, exec_credential, kubeconfig};

#[derive(clap::Args)]
pub struct KubeconfigArgs {
    /// The gateway's config (for the connection and the kube listener's address).
    #[arg(
        long,
        short,
        env = "PORTCULLIS_CONFIG",
        required_unless_present = "print_credential"
    )]
    config: Option<PathBuf>,
    /// The kube connection kubectl reaches.
    #[arg(long, required_unless_present = "print_credential")]
    connection: Option<String>,
    /// The gateway's URL as kubectl reaches it (default: `https://<kube listener>`).
    #[arg(long)]
    server: Option<String>,
    /// CA certificate (PEM) the gateway's certificate chains to, embedded in the kubeconfig.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Environment variable holding the caller's token when kubectl runs.
    #[arg(long, conflicts_with = "token_file")]
    token_env: Option<String>,
    /// File holding the caller's token (kubectl re-reads it).
    #[arg(long)]
    token_file: Option<String>,
    /// Write here instead of stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Act as kubectl's exec credential plugin: print an ExecCredential with the token in
    /// `--token-env`.
    #[arg(long, requires = "token_env")]
    print_credential: bool,
}

pub fn run(args: KubeconfigArgs) -> anyhow::Result<ExitCode> {
    if args.print_credential {
        let var = args.token_env.unwrap_or_default();
        let token = std::env::var(&var)
            .with_context(|| format!("environment variable {var} is not set"))?;
        println!("{}", exec_credential(token.trim()));
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(config), Some(name)) = (&args.config, &args.connection) else {
        anyhow::bail!("--config and --connection are required");
    };
    let cfg = crate::load_config(config)?;
    let conn = cfg
        .connections
        .iter()
        .find(|c| &c.name == name && c.protocol == Protocol::Kube)
        .with_context(|| format!("no kube connection named `{name}` in {}", config.display()))?;
    let server = match &args.server {
        Some(s) => s.trim_end_matches('/').to_string(),
        None => {
            let l = cfg
                .listeners
                .iter()
                .find(|l| l.protocol == Protocol::Kube)
                .context("the config has no kube listener; give --server")?;
            let scheme = if l.tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{}", l.listen)
        }
    };
    let server = format!("{server}/c/{}", conn.name);
    let ca = match &args.ca {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let program = std::env::current_exe()
        .ok()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "portcullis".into());
    let token = match (args.token_env, args.token_file) {
        (Some(v), _) => TokenFrom::Env(v),
        (None, Some(f)) => TokenFrom::File(f),
        (None, None) => TokenFrom::None,
    };
    let text = kubeconfig(&KubeconfigSpec {
        connection: &conn.name,
        server: &server,
        ca_pem: ca.as_deref(),
        token,
        program: &program,
    });
    match &args.output {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?,
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
