//! `tds-testserver --listen ADDR --postgres URL [--cert FILE --key FILE]`: a TDS server that
//! runs every request on PostgreSQL (a stand-in for SQL Server in tests and benchmarks; the
//! SQL is PostgreSQL's, not T-SQL). Prints `listening on ADDR` once it accepts connections.

use std::path::PathBuf;

use tds_testserver::{Config, PgConfig, TestServer, Tls};

const USAGE: &str = "usage: tds-testserver --listen ADDR --postgres URL|'key=value ...' \
                     [--cert FILE --key FILE] [--max-request BYTES]";

struct Args {
    listen: String,
    postgres: String,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    max_request: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: "127.0.0.1:1433".into(),
        postgres: String::new(),
        cert: None,
        key: None,
        max_request: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.into());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--listen" => args.listen = value,
            "--postgres" => args.postgres = value,
            "--cert" => args.cert = Some(value.into()),
            "--key" => args.key = Some(value.into()),
            "--max-request" => {
                args.max_request = Some(value.parse().map_err(|_| format!("bad size {value:?}"))?)
            }
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    if args.postgres.is_empty() {
        return Err(format!("--postgres is required\n{USAGE}"));
    }
    Ok(args)
}

async fn run(args: Args) -> Result<(), String> {
    let listen = args
        .listen
        .parse()
        .map_err(|e| format!("--listen {}: {e}", args.listen))?;
    let pg = PgConfig::parse(&args.postgres).map_err(|e| e.to_string())?;
    let mut config = Config::new(listen, pg);
    config.tls = match (&args.cert, &args.key) {
        (Some(c), Some(k)) => Some(Tls::from_pem_files(c, k).map_err(|e| e.to_string())?),
        (None, None) => None,
        _ => return Err("--cert and --key go together".into()),
    };
    if let Some(m) = args.max_request {
        config.max_request = m;
    }
    let server = TestServer::bind(config).await.map_err(|e| e.to_string())?;
    println!("listening on {}", server.handle().local_addr());
    server.run().await.map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tds-testserver: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
