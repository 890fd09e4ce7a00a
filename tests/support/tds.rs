//! A SQL Server gateway in front of a TDS server, and how tests reach it with real clients.
//!
//! No real SQL Server or Azure SQL can run on these machines (none is in any registry they
//! reach, and there is no Docker). The target is Microsoft's own `mssql-mock-tds` (the mock
//! server of the `mssql-rs` project), run in-process: PRELOGIN, TLS inside PRELOGIN and
//! TDS 8.0 strict TLS, LOGIN7 with a SQL login or a FEDAUTH token, SQL batches answered from
//! a registry of scripted result sets, Attention. The clients are real: FreeTDS `tsql` and
//! `python-tds`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use mssql_mock_tds::{
    ColumnDefinition, ColumnValue, ConnectionInfo, ConnectionStore, MockTdsServer, QueryRegistry,
    QueryResponse, Row, SqlDataType,
};

use super::{Gateway, free_port, root};

/// How the mock target speaks TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MockTls {
    Off,
    /// TDS 7.x: TLS negotiated in PRELOGIN.
    Prelogin,
    /// TDS 8.0: TLS before any TDS byte.
    Strict,
}

/// The mock target, running on a runtime of its own.
pub struct Mock {
    rt: tokio::runtime::Runtime,
    pub addr: SocketAddr,
    registry: Arc<tokio::sync::Mutex<QueryRegistry>>,
    store: Arc<tokio::sync::Mutex<ConnectionStore>>,
}

impl Mock {
    /// A mock on a free loopback port; TLS with the certificate in `tls_dir` (made by
    /// `tests/scripts/tls-ca.sh`).
    pub fn start(tls: MockTls, tls_dir: &Path) -> Mock {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let identity = || {
            let cert = std::fs::read(tls_dir.join("server.crt")).expect("server.crt");
            let key = std::fs::read(tls_dir.join("server.key")).expect("server.key");
            mssql_mock_tds::create_test_identity(&cert, &key).expect("identity")
        };
        let server = rt.block_on(async {
            match tls {
                MockTls::Off => MockTdsServer::new("127.0.0.1:0").await,
                MockTls::Prelogin => {
                    MockTdsServer::new_with_tls("127.0.0.1:0", Some(identity())).await
                }
                MockTls::Strict => {
                    MockTdsServer::new_with_strict_tls("127.0.0.1:0", identity()).await
                }
            }
        });
        let server = server.expect("mock TDS server");
        let addr = server.local_addr();
        let registry = server.query_registry();
        let store = server.connection_store();
        rt.spawn(async move {
            let _ = server.run().await;
        });
        let mock = Mock {
            rt,
            addr,
            registry,
            store,
        };
        mock.register("SELECT 1", QueryResponse::select_one());
        mock.register(CUSTOMERS_QUERY, customers());
        mock
    }

    /// A plain-TCP mock that answers every login with a routing redirect to `to`, as Azure
    /// SQL's gateway does to send a client on to the node serving its database.
    pub fn start_redirecting(to: SocketAddr) -> Mock {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let server = rt
            .block_on(MockTdsServer::new_with_redirection(
                "127.0.0.1:0",
                to.ip().to_string(),
                to.port(),
            ))
            .expect("redirecting mock");
        let addr = server.local_addr();
        let registry = server.query_registry();
        let store = server.connection_store();
        rt.spawn(async move {
            let _ = server.run().await;
        });
        Mock {
            rt,
            addr,
            registry,
            store,
        }
    }

    /// Answer `sql` (exactly this batch text) with `response`.
    pub fn register(&self, sql: &str, response: QueryResponse) {
        self.rt
            .block_on(async { self.registry.lock().await.register(sql, response) });
    }

    /// Answer an RPC whose body holds `sql` with `response`, and hand back `handle` in the
    /// call's first OUTPUT parameter, as SQL Server does for `sp_prepexec`. The mock matches
    /// an RPC by the upper-case text of any of its string parameters (`sql` must be upper
    /// case) and writes no RETURNVALUE of its own, so the token rides in the raw bytes it
    /// sends after COLMETADATA (a server sends it after the rows; the gateway and python-tds
    /// read it the same way in either place).
    pub fn register_with_handle(&self, sql: &str, response: QueryResponse, handle: i32) {
        let name: Vec<u8> = "@handle"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        // RETURNVALUE: ordinal 0, name, status 1 (an OUTPUT parameter), UserType, Flags
        // (nullable), INTN(4), the value.
        let mut token = vec![0xAC, 0, 0, 7];
        token.extend_from_slice(&name);
        token.extend_from_slice(&[0x01, 0, 0, 0, 0, 0x01, 0, 0x26, 4, 4]);
        token.extend_from_slice(&handle.to_le_bytes());
        self.rt.block_on(async {
            self.registry
                .lock()
                .await
                .register_with_data_classification(sql, response, token)
        });
    }

    /// What each login the mock took sent it.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        self.rt
            .block_on(async { self.store.lock().await.all().values().cloned().collect() })
    }

    /// SQL batches and RPCs the mock received, over all connections.
    pub fn requests(&self) -> usize {
        self.connections()
            .iter()
            .map(|c| c.transaction_descriptor_headers.len())
            .sum()
    }
}

/// A batch the mock answers with customer rows (names, e-mails, card numbers).
pub const CUSTOMERS_QUERY: &str = "SELECT id, name, email, card FROM customers";

/// The rows a server would send for `CUSTOMERS_QUERY`.
pub fn customers() -> QueryResponse {
    let rows = [
        (1, "Ada Lovelace", "ada@example.com", "4111 1111 1111 1111"),
        (2, "Alan Turing", "alan@example.org", "5500-0000-0000-0004"),
    ];
    QueryResponse::new(
        vec![
            ColumnDefinition::new("id", SqlDataType::Int),
            ColumnDefinition::new("name", SqlDataType::NVarChar),
            ColumnDefinition::new("email", SqlDataType::NVarChar),
            ColumnDefinition::new("card", SqlDataType::NVarChar),
        ],
        rows.iter()
            .map(|(id, name, email, card)| {
                Row::new(vec![
                    ColumnValue::Int(*id),
                    ColumnValue::NVarChar((*name).into()),
                    ColumnValue::NVarChar((*email).into()),
                    ColumnValue::NVarChar((*card).into()),
                ])
            })
            .collect(),
    )
}

/// A throwaway CA and a `localhost` certificate in `dir`.
pub fn tls_files(dir: &Path) -> PathBuf {
    let tls = dir.join("tls");
    let status = Command::new("bash")
        .arg(root().join("tests/scripts/tls-ca.sh"))
        .arg(&tls)
        .status()
        .expect("tls-ca.sh");
    assert!(status.success());
    tls
}

/// The policy TDS tests run under.
pub const POLICY: &str = r#"
@id("connect")
permit(principal in Group::"ci", action == Action::"connect", resource);

@id("reads")
permit(principal in Group::"ci", action == Action::"sql.read", resource);

@id("session")
permit(principal in Group::"ci", action == Action::"sql.session", resource);

@id("no-ddl")
@reason("schema changes go through migrations, not the gateway")
forbid(principal, action == Action::"sql.ddl", resource);
"#;

/// A gateway with a TDS listener and connection `sales` to `mock`.
pub struct TdsGw {
    pub gw: Gateway,
    pub port: u16,
    pub tls: PathBuf,
}

pub fn start(mock: &Mock, tls: &Path, target_encrypt: &str, extra: &str) -> TdsGw {
    start_with_policy(mock, tls, target_encrypt, POLICY, extra)
}

pub fn start_with_policy(
    mock: &Mock,
    tls: &Path,
    target_encrypt: &str,
    policy: &str,
    extra: &str,
) -> TdsGw {
    start_with_credential(mock.addr, tls, target_encrypt, policy, &sql_login(), extra)
}

/// The SQL login the gateway holds for `sales` (its password is in `sales.password`).
pub const HELD_USER: &str = "portcullis_app";
pub const HELD_PASSWORD: &str = "held-secret-Pa55";

/// The connection settings for the held SQL login.
pub fn sql_login() -> String {
    format!("user = \"{HELD_USER}\"\npassword_file = \"sales.password\"")
}

/// A gateway whose connection `sales` reaches `target` and holds `credential` (the
/// connection's settings that say how the gateway logs in to the target).
pub fn start_with_credential(
    target: SocketAddr,
    tls: &Path,
    target_encrypt: &str,
    policy: &str,
    credential: &str,
    extra: &str,
) -> TdsGw {
    let port = free_port();
    let gw = Gateway::start_config(port, policy, |dir, admin| {
        std::fs::write(dir.join("sales.password"), HELD_PASSWORD).expect("password");
        format!(
            r#"
[gateway]
state_dir = "state"
admin_listen = "127.0.0.1:{admin}"
policy = "policy.cedar"

[[identity.issuers]]
name = "builtin"

[[listeners]]
protocol = "tds"
listen = "127.0.0.1:{port}"
tls = {{ cert = "{cert}", key = "{key}" }}

[[connections]]
name = "sales"
protocol = "tds"
target = "{target}"
database = "sales"
{credential}
encrypt = "{target_encrypt}"
{ca}

[audit]
jsonl = "audit.jsonl"
{extra}
"#,
            cert = tls.join("server.crt").display(),
            key = tls.join("server.key").display(),
            // A CA only means something when the target leg is encrypted.
            ca = if target_encrypt == "off" {
                String::new()
            } else {
                format!("sslrootcert = \"{}\"", tls.join("ca.crt").display())
            },
        )
    });
    TdsGw {
        gw,
        port,
        tls: tls.to_path_buf(),
    }
}

impl TdsGw {
    /// An access key for `sub` in `groups`: what a client that can only send a password
    /// sends.
    pub fn access_key(&self, sub: &str, groups: &[&str]) -> String {
        let token = self.gw.token(sub, groups);
        let out = Command::new(super::bin())
            .args(["token", "exchange", "--gateway"])
            .arg(format!("http://127.0.0.1:{}", self.gw.admin_port))
            .env("PORTCULLIS_TOKEN", &token)
            .output()
            .expect("token exchange");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_string()
    }

    /// Run `sql` through FreeTDS `tsql` with `password`, TLS required and verified against
    /// the test CA.
    pub fn tsql(&self, password: &str, sql: &str) -> Output {
        let conf = self.gw.scratch.0.join("freetds.conf");
        std::fs::write(
            &conf,
            format!(
                "[global]\n\ttds version = 7.4\n\tencryption = require\n\tca file = {}\n",
                self.tls.join("ca.crt").display()
            ),
        )
        .expect("freetds.conf");
        let mut child = Command::new("tsql")
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "pipeline", "-P", password, "-D", "sales", "-o", "q"])
            .env("FREETDSCONF", &conf)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tsql");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            let _ = writeln!(stdin, "{sql}\ngo\nexit");
        }
        child.wait_with_output().expect("tsql output")
    }

    /// Run `script` (Python using `pytds`, connection `conn` prepared) and return its output.
    pub fn python(&self, script: &str) -> Output {
        let prelude = format!(
            "import sys, pytds\nPORT = {port}\nCA = {ca:?}\n",
            port = self.port,
            ca = self.tls.join("ca.crt").display().to_string(),
        );
        Command::new("python3")
            .arg("-c")
            .arg(format!("{prelude}{script}"))
            .env("PYTHONPATH", root().join("tests/tds/pylib"))
            .output()
            .expect("python3")
    }
}

/// A process's stdout and stderr as text.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A gateway as [`start`] makes it, with a second TDS listener on the returned port whose
/// certificate is offered but not required (`required = false`): there a client that does
/// not support encryption logs in in clear.
pub fn start_relaxed(mock: &Mock, tls: &Path, target_encrypt: &str, extra: &str) -> (TdsGw, u16) {
    let plain = free_port();
    let listener = format!(
        "[[listeners]]\nprotocol = \"tds\"\nlisten = \"127.0.0.1:{plain}\"\n\
         tls = {{ cert = \"{}\", key = \"{}\", required = false }}\n{extra}",
        tls.join("server.crt").display(),
        tls.join("server.key").display(),
    );
    (start(mock, tls, target_encrypt, &listener), plain)
}

impl TdsGw {
    /// Run `script` with Node: `tds` is `tests/tds/node/client.js` (tedious helpers), `PORT`
    /// this gateway's TDS port, `ARGS` the JSON `args`; the test CA is trusted through
    /// `NODE_EXTRA_CA_CERTS`.
    pub fn node(&self, args: &serde_json::Value, script: &str) -> Output {
        let dir = root().join("tests/tds/node");
        let prelude = format!(
            "const tds = require({client:?});\nconst PORT = {port};\nconst ARGS = {args};\n",
            client = dir.join("client.js").display().to_string(),
            port = self.port,
        );
        Command::new("node")
            .arg("-e")
            .arg(format!("{prelude}{script}"))
            .env("NODE_PATH", dir.join("node_modules"))
            .env("NODE_EXTRA_CA_CERTS", self.tls.join("ca.crt"))
            .output()
            .expect("node")
    }

    /// Run `script` (Python with `pymssql` imported, `PORT` set) with FreeTDS (the one pymssql
    /// bundles) told to trust the test CA.
    pub fn pymssql(&self, script: &str) -> Output {
        let conf = self.gw.scratch.0.join("pymssql-freetds.conf");
        std::fs::write(
            &conf,
            format!(
                "[global]\n\ttds version = 7.4\n\tca file = {}\n",
                self.tls.join("ca.crt").display()
            ),
        )
        .expect("freetds.conf");
        Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import sys, pymssql\nPORT = {}\n{script}",
                self.port
            ))
            .env("PYTHONPATH", root().join("tests/tds/pylib"))
            .env("FREETDSCONF", &conf)
            .output()
            .expect("python3")
    }
}

/// How a tiberius client proves who it is.
pub enum TiberiusAuth<'a> {
    /// A SQL login: the access key as its password.
    Key(&'a str),
    /// An access token in LOGIN7's FEDAUTH extension.
    Token(&'a str),
}

/// A tiberius client logged in through the gateway at `port` to connection `sales`, TLS
/// verified against the test CA in `tls`.
pub async fn tiberius(
    port: u16,
    tls: &Path,
    auth: TiberiusAuth<'_>,
) -> tiberius::Result<tiberius::Client<tokio_util::compat::Compat<tokio::net::TcpStream>>> {
    use tokio_util::compat::TokioAsyncWriteCompatExt;
    let mut config = tiberius::Config::new();
    config.host("localhost");
    config.port(port);
    config.database("sales");
    config.encryption(tiberius::EncryptionLevel::Required);
    config.trust_cert_ca(tls.join("ca.crt").display().to_string());
    config.authentication(match auth {
        TiberiusAuth::Key(key) => tiberius::AuthMethod::sql_server("pipeline", key),
        TiberiusAuth::Token(token) => tiberius::AuthMethod::aad_token(token),
    });
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    tiberius::Client::connect(config, tcp.compat_write()).await
}
