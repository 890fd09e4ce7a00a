//! An HTTPS API gateway in front of a real HTTP server, and curl through it.
//!
//! The target is `tests/http/backend.py` (Python's `http.server`, HTTP/1.1 with keep-alive
//! and chunked bodies) serving Azure Resource Manager and Key Vault-shaped JSON. It logs
//! every request it receives (method, path, headers, body digest), so tests prove what
//! reached it: the held credential and never the caller's token, the normalised path, the
//! approved body.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Gateway, Run, Scratch, free_port, root};

/// The API key the gateway holds for connection `arm` (in `arm.key`).
pub const HELD_KEY: &str = "held-api-key-9d41c07e";

/// The example subscription and resource group the backend serves.
pub const SUB: &str = "/subscriptions/00000000-0000-0000-0000-000000000001";
pub const RG: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-prod";

/// The real HTTP server behind the gateway; stopped (by its PID) on drop.
pub struct Backend {
    pub port: u16,
    child: Child,
    log: PathBuf,
    _dir: Scratch,
}

impl Backend {
    pub fn start() -> Backend {
        let dir = Scratch::new("http-backend");
        let port = free_port();
        let log = dir.0.join("requests.jsonl");
        let child = Command::new("python3")
            .arg(root().join("tests/http/backend.py"))
            .arg(port.to_string())
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 backend");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the backend did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Backend {
            port,
            child,
            log,
            _dir: dir,
        }
    }

    /// Every request the backend has received, in order.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("backend log line"))
            .collect()
    }

    /// The value of header `name` (lower case) on request `r`, if it had one.
    pub fn header(r: &serde_json::Value, name: &str) -> Option<String> {
        r["headers"]
            .as_array()?
            .iter()
            .find(|h| h[0] == name)
            .and_then(|h| h[1].as_str().map(str::to_string))
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway with a plain loopback HTTP listener and connection `arm` to a backend.
pub struct HttpGw {
    pub gw: Gateway,
    pub port: u16,
    /// The connection `url` names.
    pub connection: String,
}

/// Start a gateway whose connection `arm` reaches `backend` holding `credential` (TOML
/// lines of the connection: `[connections.http]` header or `oauth`), with `policy` and
/// `extra` config appended.
pub fn start(backend: &Backend, policy: &str, credential: &str, extra: &str) -> HttpGw {
    start_tls(backend, policy, credential, extra, None)
}

/// [`start`] with a TLS listener whose certificate and key are `tls`'s `server.crt` and
/// `server.key` (`tests/scripts/tls-ca.sh`).
pub fn start_tls(
    backend: &Backend,
    policy: &str,
    credential: &str,
    extra: &str,
    tls: Option<&Path>,
) -> HttpGw {
    start_named("arm", backend.port, policy, credential, extra, tls)
}

/// A gateway whose connection `name` reaches `127.0.0.1:target` (see [`start_tls`]).
pub fn start_named(
    name: &str,
    target: u16,
    policy: &str,
    credential: &str,
    extra: &str,
    tls: Option<&Path>,
) -> HttpGw {
    let port = free_port();
    let tls_line = tls.map_or(String::new(), |d| {
        format!(
            "tls = {{ cert = \"{}\", key = \"{}\" }}",
            d.join("server.crt").display(),
            d.join("server.key").display()
        )
    });
    let gw = Gateway::start_config(port, policy, |dir: &Path, admin| {
        std::fs::write(dir.join("arm.key"), HELD_KEY).expect("key file");
        format!(
            r#"
[gateway]
state_dir = "state"
admin_listen = "127.0.0.1:{admin}"
policy = "policy.cedar"

[[identity.issuers]]
name = "builtin"

[[listeners]]
protocol = "http"
listen = "127.0.0.1:{port}"
{tls_line}

[[connections]]
name = "{name}"
protocol = "http"
target = "127.0.0.1:{target}"
{credential}

[approvals]
approvers = ["approvers"]

[audit]
jsonl = "audit.jsonl"
{extra}
"#
        )
    });
    HttpGw {
        gw,
        port,
        connection: name.to_string(),
    }
}

/// A throwaway CA and a server certificate for `localhost` in `dir`.
pub fn tls_files(dir: &Path) -> PathBuf {
    let d = dir.join("tls");
    let ok = Command::new("bash")
        .arg(root().join("tests/scripts/tls-ca.sh"))
        .arg(&d)
        .status()
        .expect("tls-ca.sh")
        .success();
    assert!(ok, "tls-ca.sh failed");
    d
}

/// Send `raw` bytes to `port` on one connection and read until the gateway closes it or
/// goes quiet; what came back.
pub fn raw_exchange(port: u16, raw: &[u8]) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(raw).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The held credential as a static API key header.
pub fn api_key() -> String {
    "[connections.http]\nscheme = \"http\"\ncase_insensitive = true\n\
     header = { name = \"x-api-key\", value_file = \"arm.key\" }"
        .to_string()
}

impl HttpGw {
    /// The gateway's URL for `path` on connection `arm`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/c/{}{path}", self.port, self.connection)
    }

    /// curl with the caller's `token`, `args`, then the URL (`--path-as-is`, so what the
    /// test spells is what the gateway reads). Stdout is the body then a line with the
    /// status.
    pub fn curl(&self, token: &str, args: &[&str], path: &str) -> Run {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "--path-as-is",
            "--max-time",
            "20",
            "-w",
            "\n%{http_code}",
        ]);
        if !token.is_empty() {
            cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        cmd.args(args).arg(self.url(path));
        cmd.output().expect("curl").into()
    }
}

/// The body and status of a `curl` run.
pub fn split(r: &Run) -> (String, u16) {
    let (body, status) = r.stdout.rsplit_once('\n').unwrap_or(("", &r.stdout));
    (
        body.to_string(),
        status
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("status: {}", r.stderr)),
    )
}
