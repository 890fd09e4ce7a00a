//! Fixtures for end-to-end tests: a real PostgreSQL cluster started by the project's own
//! script (one per test binary), gateways started from the real binary with their own
//! config, state and ports, and real clients (psql, pgbench, curl) run as processes.
#![allow(dead_code)]

pub mod clients;
pub mod http;
pub mod kube;
pub mod masking;
pub mod oidc;
mod openssh;
pub mod ssh;
pub mod tds;
pub mod tds_pg;

#[allow(unused_imports)] // each test binary uses a part
pub use openssh::{Sshd, current_user, ssh_keygen, sshd};

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// The gateway binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_portcullis"))
}

/// A free loopback port (bound then released).
///
/// Ports come from 20000–31999, below the kernel's ephemeral range (32768+):
/// a port the OS hands out with `bind(0)` can be taken by any outgoing
/// connection (a client to PostgreSQL, say) before the gateway binds it. Each
/// test process starts at its own offset and walks the window, so parallel
/// tests never pick the same port twice.
pub fn free_port() -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::SeqCst) % SPAN;
        let port = (LOW + n) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {LOW}..{}", LOW + SPAN)
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A fresh scratch directory, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!(
            "portcullis-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch dir");
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The test binary's PostgreSQL cluster.
pub struct Pg {
    pub port: u16,
    pub dir: PathBuf,
    pub password: String,
}

impl Pg {
    /// Run SQL as the superuser over the local socket, bypassing the gateway.
    pub fn admin_sql(&self, sql: &str) -> String {
        let mut cmd = Command::new("psql");
        if unsafe_is_root() {
            cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--", "psql"]);
        }
        let out = cmd
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "orders",
                "-c",
                sql,
            ])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "admin sql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

fn unsafe_is_root() -> bool {
    // `id -u` rather than libc: the crates forbid unsafe code.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Start (once per test binary) the PostgreSQL cluster; it stops when this process exits.
pub fn pg() -> &'static Pg {
    static PG: OnceLock<Pg> = OnceLock::new();
    PG.get_or_init(|| {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("portcullis-pg-{}-{port}", std::process::id()));
        let password = format!("pw-{}", std::process::id());
        let out = Command::new("bash")
            .arg(root().join("tests/scripts/pg.sh"))
            .args(["start"])
            .arg(&dir)
            .arg(port.to_string())
            .arg(std::process::id().to_string())
            .env("PG_APP_PASSWORD", &password)
            .output()
            .expect("pg.sh");
        assert!(
            out.status.success(),
            "starting PostgreSQL failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Pg {
            port,
            dir,
            password,
        }
    })
}

/// Output of a client process, decoded.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            ok: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// A running gateway with its own config, policy, state and ports.
pub struct Gateway {
    child: Option<Child>,
    pub scratch: Scratch,
    pub config: PathBuf,
    pub pg_port: u16,
    pub admin_port: u16,
    pub log: PathBuf,
}

/// What a gateway under test is configured with.
pub struct GatewaySpec<'a> {
    pub policy: &'a str,
    /// Extra TOML appended to the generated config (more issuers, connections...).
    pub extra: &'a str,
    /// Target of the `orders` connection; defaults to the test cluster.
    pub target: Option<String>,
    /// `[[identity.issuers]]` builtin leeway.
    pub builtin_leeway: u64,
    /// Certificate and key (PEM) for a TLS listener.
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl Default for GatewaySpec<'_> {
    fn default() -> Self {
        GatewaySpec {
            policy: TEST_POLICY,
            extra: "",
            target: None,
            builtin_leeway: 5,
            tls: None,
        }
    }
}

/// The policy most tests run under.
pub const TEST_POLICY: &str = r#"
@id("connect")
permit(principal in Group::"ci", action == Action::"connect", resource);
@id("connect-readers")
permit(principal in Group::"reader", action == Action::"connect", resource);

@id("read")
permit(principal, action in [Action::"sql.read", Action::"sql.session"], resource)
when { principal in Group::"ci" || principal in Group::"reader" };

@id("bounded-writes")
permit(principal in Group::"ci", action == Action::"sql.write", resource)
when { !context.unbounded && !context.tables.contains("audit_log") };

@id("no-ddl")
@reason("schema changes go through migrations, not ad-hoc sessions")
forbid(principal, action == Action::"sql.ddl", resource);

@id("no-admin")
@reason("server administration is not allowed through the gateway")
forbid(principal, action == Action::"sql.admin", resource);

@id("no-unknown")
@reason("statement could not be classified")
forbid(principal, action == Action::"sql.unknown", resource);
"#;

impl Gateway {
    pub fn start(spec: GatewaySpec<'_>) -> Gateway {
        let pg = pg();
        let scratch = Scratch::new("gw");
        let dir = scratch.0.clone();
        let pg_port = free_port();
        let admin_port = free_port();
        std::fs::write(dir.join("policy.cedar"), spec.policy).expect("policy");
        std::fs::write(dir.join("orders.password"), &pg.password).expect("password file");
        let target = spec
            .target
            .unwrap_or_else(|| format!("127.0.0.1:{}", pg.port));
        let tls = match &spec.tls {
            Some((cert, key)) => format!(
                "tls = {{ cert = \"{}\", key = \"{}\" }}",
                cert.display(),
                key.display()
            ),
            None => String::new(),
        };
        let config = format!(
            r#"
[gateway]
state_dir = "state"
admin_listen = "127.0.0.1:{admin_port}"
policy = "policy.cedar"

[[identity.issuers]]
name = "builtin"
leeway_secs = {leeway}

[[listeners]]
protocol = "postgres"
listen = "127.0.0.1:{pg_port}"
{tls}

[[connections]]
name = "orders"
protocol = "postgres"
target = "{target}"
database = "orders"
user = "app"
password_file = "orders.password"

[audit]
jsonl = "audit.jsonl"
{extra}
"#,
            leeway = spec.builtin_leeway,
            extra = spec.extra
        );
        let config_path = dir.join("portcullis.toml");
        std::fs::write(&config_path, config).expect("config");
        let log = dir.join("gateway.log");
        let mut gw = Gateway {
            child: None,
            scratch,
            config: config_path,
            pg_port,
            admin_port,
            log,
        };
        gw.spawn();
        gw
    }

    /// Start (or restart) the gateway process and wait until it answers.
    pub fn spawn(&mut self) {
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = Command::new(bin())
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("PORTCULLIS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("spawn gateway");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.pg_port)).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", self.admin_port)).is_ok()
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("gateway exited with {status}: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("gateway did not start: {}", self.log_text());
    }

    /// Kill the gateway with SIGKILL (no flush, no shutdown).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop the gateway as an operator would (SIGTERM) and wait for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
            panic!("gateway did not stop on SIGTERM: {}", self.log_text());
        }
    }

    /// Start the gateway process expecting it to refuse; what it said.
    pub fn spawn_refused(&mut self) -> String {
        let errf = self.scratch.0.join("refused.log");
        let mut child = Command::new(bin())
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&errf).expect("log"))
            .spawn()
            .expect("spawn gateway");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                assert!(!status.success(), "the gateway exited cleanly");
                return std::fs::read_to_string(&errf).unwrap_or_default();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the gateway started: {}",
                    std::fs::read_to_string(&errf).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Process id of the running gateway.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(|c| c.id())
            .expect("gateway running")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Run the gateway's CLI against this gateway's config.
    pub fn cli(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new(bin());
        cmd.args(args).arg("--config").arg(&self.config);
        cmd.output().expect("portcullis cli").into()
    }

    /// Mint a token from this gateway's built-in issuer.
    pub fn token(&self, sub: &str, groups: &[&str]) -> String {
        self.token_with(sub, groups, &[])
    }

    pub fn token_with(&self, sub: &str, groups: &[&str], extra: &[&str]) -> String {
        let mut args = vec!["token", "issue", "--sub", sub];
        for g in groups {
            args.push("--group");
            args.push(g);
        }
        args.extend_from_slice(extra);
        let r = self.cli(&args);
        assert!(r.ok, "token issue failed: {}", r.stderr);
        r.stdout.trim().to_string()
    }

    /// pgbench through the gateway to the `orders` connection, `args` before the database.
    pub fn pgbench(&self, token: &str, args: &[&str]) -> Run {
        Command::new("pgbench")
            .args(["-h", "127.0.0.1", "-p"])
            .arg(self.pg_port.to_string())
            .args(["-U", "ci"])
            .args(args)
            .arg("orders")
            .env("PGPASSWORD", token)
            .output()
            .expect("pgbench")
            .into()
    }

    /// psql through the gateway: `-X -At -v ON_ERROR_STOP=1 -c SQL`.
    pub fn psql(&self, token: &str, sql: &str) -> Run {
        self.psql_args(token, &["-c", sql])
    }

    pub fn psql_args(&self, token: &str, args: &[&str]) -> Run {
        self.psql_env(token, "orders", args, &[])
    }

    /// A psql command through the gateway to connection `db`, not yet run (for tests that
    /// need its stdin or to interrupt it).
    pub fn psql_command(&self, token: &str, db: &str) -> Command {
        let mut cmd = Command::new("psql");
        cmd.args(["-X", "-At", "-h", "127.0.0.1", "-p"])
            .arg(self.pg_port.to_string())
            .args(["-U", "ci", "-d", db])
            .env("PGPASSWORD", token)
            .env("PGCONNECT_TIMEOUT", "10")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// psql through the gateway to connection `db`, with extra environment (PGSSLMODE...).
    pub fn psql_env(&self, token: &str, db: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
        Command::new("psql")
            .args([
                "-X",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
            ])
            .arg(self.pg_port.to_string())
            .args(["-U", "ci", "-d", db])
            .envs(env.iter().copied())
            .args(args)
            .env("PGPASSWORD", token)
            .env("PGCONNECT_TIMEOUT", "10")
            .env_remove("PGSERVICE")
            .output()
            .expect("psql")
            .into()
    }

    /// Audit events as JSON values (via `portcullis audit query --json`).
    pub fn audit(&self, filters: &[&str]) -> Vec<serde_json::Value> {
        let mut args = vec!["audit", "query", "--json"];
        args.extend_from_slice(filters);
        let r = self.cli(&args);
        assert!(r.ok, "audit query failed: {}", r.stderr);
        r.stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit json line"))
            .collect()
    }

    /// The audit events `filters` select, once `done` holds for them or after 5 s. Events
    /// written after the client hears (a command's end, a refusal at login) land within
    /// milliseconds; this waits for them instead of racing them.
    pub fn audit_until(
        &self,
        filters: &[&str],
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut events = self.audit(filters);
        while !done(&events) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            events = self.audit(filters);
        }
        events
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Gateway {
    /// A gateway from a whole config written by `config(dir, admin_port)`, with no
    /// PostgreSQL; `listen_port` is the listener waited for (it goes in `pg_port`).
    pub fn start_config(
        listen_port: u16,
        policy: &str,
        config: impl FnOnce(&Path, u16) -> String,
    ) -> Gateway {
        let scratch = Scratch::new("gw");
        let dir = scratch.0.clone();
        let admin_port = free_port();
        std::fs::write(dir.join("policy.cedar"), policy).expect("policy");
        let config_path = dir.join("portcullis.toml");
        std::fs::write(&config_path, config(&dir, admin_port)).expect("config");
        let log = dir.join("gateway.log");
        let mut gw = Gateway {
            child: None,
            scratch,
            config: config_path,
            pg_port: listen_port,
            admin_port,
            log,
        };
        gw.spawn();
        gw
    }
}

/// The `[gateway]` section (state in `state`, policy in `policy.cedar`, admin on `admin`) and
/// the built-in issuer, as every test gateway's config starts.
pub fn gateway_section(admin: u16) -> String {
    format!(
        "[gateway]\nstate_dir = \"state\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
         policy = \"policy.cedar\"\n\n[[identity.issuers]]\nname = \"builtin\"\n"
    )
}
