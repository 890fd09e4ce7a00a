//! The test binary's OpenSSH server (`tests/scripts/sshd.sh`) and the keys tests log in with.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::{free_port, root};

/// The test binary's OpenSSH server, started by `tests/scripts/sshd.sh`.
pub struct Sshd {
    pub port: u16,
    pub dir: PathBuf,
}

impl Sshd {
    /// Private key sshd accepts for the current user.
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }

    /// known_hosts listing the server's host key for `[127.0.0.1]:port`.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// The server's host key fingerprint, `SHA256:...`.
    pub fn fingerprint(&self) -> String {
        std::fs::read_to_string(self.dir.join("host_fingerprint"))
            .expect("host fingerprint")
            .trim()
            .to_string()
    }
}

/// A fresh passphrase-less Ed25519 key pair at `path` (public key at `path.pub`).
pub fn ssh_keygen(path: &Path, comment: &str) -> PathBuf {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen")
        .success();
    assert!(ok, "ssh-keygen {}", path.display());
    path.to_path_buf()
}

/// The user tests log in to sshd as (whoever runs the tests).
pub fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Start (once per test binary) an sshd; it stops when this process exits.
pub fn sshd() -> &'static Sshd {
    static SSHD: OnceLock<Sshd> = OnceLock::new();
    SSHD.get_or_init(|| {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("portcullis-sshd-{}-{port}", std::process::id()));
        let out = Command::new("bash")
            .arg(root().join("tests/scripts/sshd.sh"))
            .arg("start")
            .arg(&dir)
            .arg(port.to_string())
            .arg(std::process::id().to_string())
            .output()
            .expect("sshd.sh");
        assert!(
            out.status.success(),
            "starting sshd failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Sshd { port, dir }
    })
}
