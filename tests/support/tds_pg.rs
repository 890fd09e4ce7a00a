//! A TDS target that answers from the test PostgreSQL: `tds-testserver`, run in-process.
//!
//! It is a stand-in for SQL Server, not an emulation: it speaks the server side of TDS and
//! runs each request on PostgreSQL, so the SQL in these tests is PostgreSQL's (not T-SQL) and
//! what they prove is the gateway's handling of real data in real TDS tokens: many packets,
//! PLP values, dates, decimals, NULLs, errors, Attention.
//!
//! The fixture lives in a database of its own, `tds_pg`, in the test binary's cluster.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use proxy_tds::codec::login7::Login7;
use proxy_tds::codec::messages::Done;
use proxy_tds::codec::packet::{self, HEADER_LEN};
use proxy_tds::codec::prelogin::{self, PreLogin};
use proxy_tds::codec::tokens::{StreamState, Token, next_token};
use proxy_tds::codec::values::RowValues;
use tds_testserver::{Config, Handle, PgConfig, TestServer, Tls};

use super::tds::{POLICY, TdsGw, sql_login, start_with_credential};
use super::{free_port, pg};

/// The fixture: typed rows, thousands of rows, a long document.
pub const FIXTURE: &str = r#"
CREATE TABLE people (
    id      int PRIMARY KEY,
    name    varchar(100) NOT NULL,
    email   text,
    card    text,
    ssn     text,
    balance numeric(12,2),
    score   float8,
    active  boolean,
    born    date,
    created timestamp(3),
    seen    timestamptz,
    ref     uuid,
    photo   bytea,
    small   smallint,
    big     bigint
);
INSERT INTO people VALUES
  (1, 'Ada Lovelace', 'ada@example.com', '4111 1111 1111 1111', '078-05-1120', 1234.50, 0.25,
   true, '1815-12-10', '2024-03-01 12:34:56.789', '2024-03-01 12:00:00+02',
   'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\x00ff10', 7, 9000000000),
  (2, 'Alan Turing', 'alan@example.org', '5500-0000-0000-0004', '219-09-9999', -0.01, -1.5,
   false, '1912-06-23', '1954-06-07 00:00:00', '1954-06-07 09:30:00+00',
   '00000000-0000-0000-0000-000000000001', '\x', -7, -1),
  (3, 'Grace Hopper', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
   NULL);
CREATE TABLE events AS
  SELECT g AS id, 'event ' || g AS label, 'user' || g || '@example.com' AS email,
         (g * 7 % 1000) / 10.0 AS amount
  FROM generate_series(1, 5000) AS g;
CREATE TABLE docs (id int PRIMARY KEY, body text);
INSERT INTO docs VALUES (1, repeat('lorem ipsum ', 20000) || 'write to ada@example.com');
"#;

/// Rows in `events`.
pub const EVENTS: usize = 5000;

/// Run SQL as the superuser in the fixture database.
pub fn fixture_sql(sql: &str) -> String {
    let pg = pg();
    let mut cmd = Command::new("psql");
    if super::unsafe_is_root() {
        cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--", "psql"]);
    }
    let out = cmd
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(&pg.dir)
        .args(["-p", &pg.port.to_string(), "-U", "postgres", "-d", "tds_pg"])
        .args(["-c", sql])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "fixture sql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Create the `tds_pg` database and its tables, once per test binary.
pub fn fixture() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        pg().admin_sql("CREATE DATABASE tds_pg OWNER app");
        fixture_sql(&format!("SET ROLE app;\n{FIXTURE}"));
    });
}

/// The test server on a free port, backed by the fixture database as `app`.
pub struct PgTds {
    rt: tokio::runtime::Runtime,
    pub handle: Handle,
    pub addr: SocketAddr,
}

impl PgTds {
    /// Start it; with `tls` (a directory from `tls_files`), it offers that certificate.
    pub fn start(tls: Option<&Path>) -> PgTds {
        fixture();
        let pg = pg();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        // A session time zone off UTC, so offsets are carried, not assumed.
        let url = format!(
            "postgres://app:{}@127.0.0.1:{}/tds_pg?TimeZone=Asia/Kolkata",
            pg.password, pg.port
        );
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut config = Config::new(listen, PgConfig::parse(&url).expect("pg url"));
        config.tls = tls.map(|dir| {
            Tls::from_pem_files(&dir.join("server.crt"), &dir.join("server.key")).expect("tls")
        });
        let server = rt
            .block_on(TestServer::bind(config))
            .expect("tds-testserver");
        let handle = server.handle();
        rt.spawn(server.run());
        PgTds {
            rt,
            addr: handle.local_addr(),
            handle,
        }
    }

    /// Run `f` on the server's runtime (for the raw client below).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// `script` (Python using `pytds`) against the server directly; `PORT` and `CA` are set.
    pub fn python(&self, ca: Option<&Path>, script: &str) -> std::process::Output {
        let ca = ca.map_or("None".to_string(), |c| {
            format!("{:?}", c.display().to_string())
        });
        let prelude = format!(
            "import sys, pytds\nPORT = {}\nCA = {ca}\n",
            self.addr.port()
        );
        Command::new("python3")
            .arg("-c")
            .arg(format!("{prelude}{script}"))
            .env("PYTHONPATH", super::root().join("tests/tds/pylib"))
            .output()
            .expect("python3")
    }

    /// `sql` through FreeTDS `tsql` straight to the server, unencrypted.
    pub fn tsql(&self, dir: &Path, sql: &str) -> std::process::Output {
        let conf = dir.join("freetds-direct.conf");
        std::fs::write(&conf, "[global]\n\ttds version = 7.4\n\tencryption = off\n")
            .expect("freetds.conf");
        let mut child = Command::new("tsql")
            .args(["-H", "127.0.0.1", "-p", &self.addr.port().to_string()])
            .args(["-U", "someone", "-P", "anything", "-D", "tds_pg", "-o", "q"])
            .env("FREETDSCONF", &conf)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("tsql");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            let _ = writeln!(stdin, "{sql}\ngo\nexit");
        }
        child.wait_with_output().expect("tsql output")
    }
}

/// A gateway whose `sales` connection is the test server, reached over TLS (`mandatory`,
/// the server's certificate checked against the test CA) or in clear (`off`).
pub fn gateway(server: &PgTds, tls: &Path, encrypt: &str, extra: &str) -> TdsGw {
    gateway_with_policy(server, tls, encrypt, POLICY, extra)
}

pub fn gateway_with_policy(
    server: &PgTds,
    tls: &Path,
    encrypt: &str,
    policy: &str,
    extra: &str,
) -> TdsGw {
    start_with_credential(server.addr, tls, encrypt, policy, &sql_login(), extra)
}

/// What came back for one request, packet by packet.
pub struct Answer {
    /// Length of each packet, header included.
    pub packets: Vec<usize>,
    /// When the first packet arrived, after the request was sent.
    pub first_packet: Duration,
    pub rows: usize,
    pub dones: Vec<Done>,
    pub errors: Vec<String>,
    /// Each row's first column, as raw bytes.
    pub first_column: Vec<Vec<u8>>,
}

/// A bare TDS client (no TLS) for what drivers do not expose: packet sizes, timing,
/// Attention.
pub struct RawClient {
    tcp: tokio::net::TcpStream,
    pub packet_size: usize,
}

async fn send(tcp: &mut tokio::net::TcpStream, ty: u8, payload: &[u8], size: usize) {
    use tokio::io::AsyncWriteExt;
    let mut out = BytesMut::new();
    packet::put_message(&mut out, ty, payload, size, 0);
    tcp.write_all(&out).await.expect("write");
}

async fn read_packet(tcp: &mut tokio::net::TcpStream) -> (u8, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut header = [0u8; HEADER_LEN];
    tcp.read_exact(&mut header).await.expect("packet header");
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let mut body = vec![0u8; len - HEADER_LEN];
    tcp.read_exact(&mut body).await.expect("packet body");
    (header[1], body)
}

impl RawClient {
    /// Log in asking for `packet_size`.
    pub async fn connect(addr: SocketAddr, packet_size: u32) -> RawClient {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let pre = PreLogin {
            version: prelogin::GATEWAY_VERSION,
            encryption: prelogin::ENCRYPT_NOT_SUP,
            ..PreLogin::default()
        };
        send(&mut tcp, packet::PRELOGIN, &pre.encode(), 4096).await;
        let (_, reply) = read_packet(&mut tcp).await;
        let reply = PreLogin::parse(&reply).expect("PRELOGIN reply");
        assert_eq!(reply.encryption, prelogin::ENCRYPT_NOT_SUP);
        let login = Login7 {
            tds_version: 0x7400_0004,
            packet_size,
            user_name: "raw".into(),
            password: "anything".into(),
            app_name: "raw-client".into(),
            database: "tds_pg".into(),
            ..Login7::default()
        };
        send(
            &mut tcp,
            packet::LOGIN7,
            &login.encode().expect("login"),
            4096,
        )
        .await;
        let mut client = RawClient {
            tcp,
            packet_size: packet_size as usize,
        };
        let answer = client.read_answer(Instant::now()).await;
        assert!(answer.errors.is_empty(), "{:?}", answer.errors);
        client
    }

    /// Send `sql` as a SQL batch, in packets of the negotiated size.
    pub async fn send_batch(&mut self, sql: &str) {
        // ALL_HEADERS: one transaction descriptor header.
        let mut p = 22u32.to_le_bytes().to_vec();
        p.extend_from_slice(&18u32.to_le_bytes());
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&[0; 8]);
        p.extend_from_slice(&1u32.to_le_bytes());
        p.extend(sql.encode_utf16().flat_map(u16::to_le_bytes));
        send(&mut self.tcp, packet::SQL_BATCH, &p, self.packet_size).await;
    }

    pub async fn attention(&mut self) {
        send(&mut self.tcp, packet::ATTENTION, &[], self.packet_size).await;
    }

    /// Read one whole answer (to its last packet), reading its tokens as they come.
    pub async fn read_answer(&mut self, sent: Instant) -> Answer {
        let mut answer = Answer {
            packets: Vec::new(),
            first_packet: Duration::ZERO,
            rows: 0,
            dones: Vec::new(),
            errors: Vec::new(),
            first_column: Vec::new(),
        };
        let mut state = StreamState::new();
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let (status, body) = read_packet(&mut self.tcp).await;
            if answer.packets.is_empty() {
                answer.first_packet = sent.elapsed();
            }
            answer.packets.push(body.len() + HEADER_LEN);
            buf.extend_from_slice(&body);
            let mut at = 0;
            while let Some((token, used)) = next_token(&buf[at..], &mut state).expect("token") {
                match &token {
                    Token::Row | Token::NbcRow => {
                        answer.rows += 1;
                        let meta = state.metadata().expect("metadata").clone();
                        let first = RowValues::new(&buf[at..at + used], &meta)
                            .expect("row")
                            .next()
                            .expect("a column")
                            .expect("value");
                        answer
                            .first_column
                            .push(buf[at + first.start..at + first.end].to_vec());
                    }
                    Token::Error(e) => answer.errors.push(e.message.clone()),
                    _ => {}
                }
                if let Some(d) = token.done() {
                    answer.dones.push(*d);
                }
                at += used;
            }
            buf.drain(..at);
            if status & packet::STATUS_EOM != 0 {
                assert!(buf.is_empty(), "the answer ends on a token boundary");
                return answer;
            }
        }
    }

    /// Run `sql` and read its answer.
    pub async fn run(&mut self, sql: &str) -> Answer {
        let sent = Instant::now();
        self.send_batch(sql).await;
        self.read_answer(sent).await
    }
}

/// Where the TLS files of a scratch directory are.
pub fn tls_dir(scratch: &Path) -> PathBuf {
    super::tds::tls_files(scratch)
}
