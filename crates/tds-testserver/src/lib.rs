//! A TDS 7.4 test server that answers from a real PostgreSQL.
//!
//! **A stand-in for SQL Server, not an emulation of it.** No SQL Server can run where
//! Portcullis is built and tested, so this server speaks the server side of TDS (PRELOGIN,
//! optional TLS, LOGIN7, SQL batches, `sp_executesql`, transaction requests, Attention) and
//! runs every request on PostgreSQL: the SQL it runs is PostgreSQL's, not T-SQL, except for
//! the few T-SQL forms [`tsql`] rewrites (CONVERT, FOR JSON, FOR XML, …). What it
//! gives tests is real data in faithful TDS tokens: COLMETADATA and ROW/NBCROW per row, with
//! INTN, FLTN, NUMERICN, BITN, NVARCHAR and NVARCHAR(MAX) in PLP chunks, VARBINARY(MAX),
//! DATEN, DATETIME2N, DATETIMEOFFSETN and GUID values (see [`columns`] for the mapping),
//! PostgreSQL errors as ERROR tokens (number 50000, class 16; a value that does not convert
//! is SQL Server's error 245, quoting the value as SQL Server does) with DONE_ERROR, several result
//! sets per batch, and answers split into packets of the negotiated size and streamed as
//! PostgreSQL returns rows, never buffered whole.
//!
//! Any SQL login is accepted and recorded ([`Handle::logins`]), so tests can check what a
//! gateway logged in with. Every session opens its own PostgreSQL connection with the
//! credentials of the [`PgConfig`]; the database a client names is reported back to it but
//! not used to pick a PostgreSQL database.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tds_testserver::Error> {
//! use tds_testserver::{Config, PgConfig, TestServer};
//! let pg = PgConfig::parse("postgres://app:secret@127.0.0.1:5432/orders")?;
//! let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
//! let server = TestServer::bind(Config::new(listen, pg)).await?;
//! let handle = server.handle();
//! tokio::spawn(server.run());
//! println!("TDS on {}", handle.local_addr());
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod columns;
pub mod datetime;
mod error;
mod exec;
mod login;
pub mod out;
pub mod pg;
mod pgconfig;
pub mod rpc;
mod session;
mod tm;
pub mod tsql;
pub mod values;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use proxy_tds::codec::login7::Login7;
use tokio::net::TcpListener;

pub use error::{Error, Result};
pub use exec::{PG_ERROR_CLASS, PG_ERROR_NUMBER};
pub use login::Tls;
pub use pgconfig::PgConfig;

/// Request texts kept for [`Handle::requests`] (the most recent ones).
const KEPT_REQUESTS: usize = 1000;

/// How the server runs.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub postgres: PgConfig,
    /// A certificate to offer: TLS inside PRELOGIN, and TDS 8.0 strict. Without one the
    /// server answers PRELOGIN with encryption not supported.
    pub tls: Option<Tls>,
    /// Largest request (SQL batch, RPC) taken, in bytes.
    pub max_request: usize,
    /// Largest PostgreSQL message taken (a row with its values), in bytes.
    pub max_pg_message: usize,
}

impl Config {
    /// Plain TCP on `listen`, PostgreSQL at `postgres`, 16 MiB requests, 256 MiB rows.
    pub fn new(listen: SocketAddr, postgres: PgConfig) -> Config {
        Config {
            listen,
            postgres,
            tls: None,
            max_request: 16 << 20,
            max_pg_message: 256 << 20,
        }
    }
}

/// What one LOGIN7 carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginRecord {
    pub user: String,
    pub password: String,
    pub database: String,
    pub app_name: String,
    pub host_name: String,
    pub server_name: String,
    pub library: String,
    /// The packet size the client asked for.
    pub packet_size: u32,
    pub tds_version: u32,
    /// A FEDAUTH access token, when the client sent one.
    pub token: Option<String>,
    /// Whether the session was encrypted.
    pub encrypted: bool,
}

#[derive(Default)]
struct Records {
    logins: Vec<LoginRecord>,
    requests: VecDeque<String>,
    request_count: u64,
}

pub(crate) struct Shared {
    config: Config,
    records: Mutex<Records>,
}

impl Shared {
    fn records(&self) -> MutexGuard<'_, Records> {
        // A panic elsewhere while holding the lock leaves the records readable.
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn record_login(&self, l: &Login7, encrypted: bool) {
        self.records().logins.push(LoginRecord {
            user: l.user_name.clone(),
            password: l.password.clone(),
            database: l.database.clone(),
            app_name: l.app_name.clone(),
            host_name: l.host_name.clone(),
            server_name: l.server_name.clone(),
            library: l.library.clone(),
            packet_size: l.packet_size,
            tds_version: l.tds_version,
            token: l.token.clone(),
            encrypted,
        });
    }

    pub(crate) fn record_request(&self, text: &str) {
        let mut r = self.records();
        r.request_count += 1;
        if r.requests.len() == KEPT_REQUESTS {
            r.requests.pop_front();
        }
        r.requests.push_back(text.to_string());
    }
}

/// What tests read from a running server.
#[derive(Clone)]
pub struct Handle {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Handle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every login taken so far, in order.
    pub fn logins(&self) -> Vec<LoginRecord> {
        self.shared.records().logins.clone()
    }

    /// The most recent SQL texts run (batches, and RPC statements as rewritten for
    /// PostgreSQL), oldest first.
    pub fn requests(&self) -> Vec<String> {
        self.shared.records().requests.iter().cloned().collect()
    }

    /// Requests run since the server started.
    pub fn request_count(&self) -> u64 {
        self.shared.records().request_count
    }
}

/// A bound server, not yet accepting.
pub struct TestServer {
    listener: TcpListener,
    handle: Handle,
}

impl TestServer {
    /// Bind the listening socket.
    pub async fn bind(config: Config) -> Result<TestServer> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| Error::Config(format!("listen on {}: {e}", config.listen)))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config,
            records: Mutex::new(Records::default()),
        });
        Ok(TestServer {
            listener,
            handle: Handle { addr, shared },
        })
    }

    /// What to read the server's records through (keep it before calling [`TestServer::run`]).
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Accept connections, one task each, until the listener fails.
    pub async fn run(self) -> Result<()> {
        // SQL Server's user sessions start at 51.
        let spids = AtomicU16::new(51);
        loop {
            let (tcp, _) = match self.listener.accept().await {
                Ok(c) => c,
                Err(e) if is_transient(&e) => {
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let spid = spids.fetch_add(1, Ordering::Relaxed).max(51);
            tokio::spawn(session::handle(self.handle.shared.clone(), tcp, spid));
        }
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    // EMFILE and ENFILE: out of descriptors for a moment.
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted)
        || e.raw_os_error().is_some_and(|c| c == 24 || c == 23)
}
