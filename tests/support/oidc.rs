//! A real OpenID Connect provider (node-oidc-provider, `tests/oidc/server.mjs`, started by
//! `tests/scripts/oidc.sh`) on a loopback port: it issues client-credentials JWTs, and its
//! token endpoint stands in for Entra ID's where the gateway obtains tokens itself.

use std::process::Command;

use super::{Scratch, free_port, root};

pub struct Oidc {
    pub port: u16,
    dir: Scratch,
}

impl Oidc {
    /// Start a provider; it stops when this is dropped or the test process exits.
    pub fn start() -> Oidc {
        let dir = Scratch::new("oidc");
        let port = free_port();
        let out = Command::new("bash")
            .arg(root().join("tests/scripts/oidc.sh"))
            .arg("start")
            .arg(&dir.0)
            .arg(port.to_string())
            .arg(std::process::id().to_string())
            .output()
            .expect("oidc.sh");
        assert!(
            out.status.success(),
            "oidc provider: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Oidc { port, dir }
    }

    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn token_url(&self) -> String {
        format!("{}/token", self.issuer())
    }

    /// An access token for `client` (with `secret`) for `resource`, fetched with curl.
    pub fn token(&self, client: &str, secret: &str, resource: &str) -> String {
        let out = Command::new("curl")
            .args(["-fsS", "-u", &format!("{client}:{secret}")])
            .args(["-d", "grant_type=client_credentials"])
            .args(["-d", &format!("resource={resource}")])
            .arg(self.token_url())
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "token endpoint: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("token JSON");
        v["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }
}

impl Drop for Oidc {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(root().join("tests/scripts/oidc.sh"))
            .arg("stop")
            .arg(&self.dir.0)
            .status();
    }
}
