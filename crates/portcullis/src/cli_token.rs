//! `portcullis token issue|exchange|revoke`.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Mint a token from the built-in issuer; prints only the token.
    Issue {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        /// Subject of the token.
        #[arg(long)]
        sub: String,
        /// A group the subject belongs to (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// A claim kept for audit and policy, as KEY=VALUE (repeatable).
        #[arg(long = "claim")]
        claims: Vec<String>,
        /// Lifetime, e.g. 15m, 1h.
        #[arg(long, default_value = "15m")]
        ttl: String,
        /// Audience; defaults to `portcullis`.
        #[arg(long)]
        audience: Option<String>,
    },
    /// Trade a JWT for a short opaque access key (for clients that cap password length).
    Exchange {
        /// Admin URL of the gateway.
        #[arg(
            long,
            env = "PORTCULLIS_ADMIN_URL",
            default_value = "http://127.0.0.1:8080"
        )]
        gateway: String,
        /// The JWT; read from standard input when omitted.
        #[arg(long, env = "PORTCULLIS_TOKEN")]
        token: Option<String>,
        /// Lifetime of the key (capped by the token's expiry and the gateway's maximum).
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Revoke an access key by its id.
    Revoke {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        id: String,
    },
}

pub fn run(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Issue {
            config,
            sub,
            groups,
            claims,
            ttl,
            audience,
        } => {
            let cfg = crate::load_config(&config)?;
            let issuer = crate::serve::builtin_issuer(&cfg)?.context(
                "the built-in issuer is not enabled: add [[identity.issuers]] name = \"builtin\"",
            )?;
            let mut kept = BTreeMap::new();
            for c in claims {
                let (k, v) = c
                    .split_once('=')
                    .with_context(|| format!("--claim `{c}`: expected KEY=VALUE"))?;
                kept.insert(k.to_string(), v.to_string());
            }
            let ttl = gateway_core::config::parse_duration(&ttl)
                .map_err(|e| anyhow::anyhow!("--ttl {e}"))?;
            let token = issuer.issue(
                &sub,
                &groups,
                &kept,
                ttl,
                audience.as_deref().unwrap_or("portcullis"),
            )?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Exchange {
            gateway,
            token,
            ttl,
        } => {
            let token = match token {
                Some(t) => t,
                None => {
                    let mut s = String::new();
                    std::io::stdin()
                        .read_to_string(&mut s)
                        .context("reading the token from stdin")?;
                    s
                }
            };
            crate::serve::install_crypto_provider();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let url = format!("{}/v1/token/exchange", gateway.trim_end_matches('/'));
            let (status, body) = rt.block_on(async {
                let client = reqwest::Client::new();
                let resp = client
                    .post(&url)
                    .bearer_auth(token.trim())
                    .json(&serde_json::json!({ "ttl": ttl }))
                    .send()
                    .await
                    .with_context(|| format!("calling {url}"))?;
                let status = resp.status();
                let body: serde_json::Value = resp.json().await.context("reading the answer")?;
                anyhow::Ok((status, body))
            })?;
            if !status.is_success() {
                anyhow::bail!(
                    "exchange refused ({status}): {}",
                    body.get("error")
                        .and_then(|e| e.as_str())
                        .unwrap_or("unknown error")
                );
            }
            let key = body
                .get("access_key")
                .and_then(|k| k.as_str())
                .context("the gateway returned no access key")?;
            println!("{key}");
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Revoke { config, id } => {
            let cfg = crate::load_config(&config)?;
            let store = crate::serve::open_store(&cfg)?;
            if gateway_core::identity::access_key::revoke(store.as_ref(), &id)? {
                println!("revoked {id}");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("no access key {id}");
                Ok(ExitCode::FAILURE)
            }
        }
    }
}
