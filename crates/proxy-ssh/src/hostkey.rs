//! The gateway's own SSH host key: created on first start, kept in the state directory
//! readable by the gateway's user only.

use std::io::Write;
use std::path::Path;

use russh::keys::PrivateKey;
use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::{Ed25519Keypair, KeypairData};

use crate::error::SshError;

/// File name of the host key inside the state directory.
pub const HOST_KEY_FILE: &str = "ssh_host_ed25519_key";

/// Load the host key from `state_dir`, creating an Ed25519 key (mode 0600) if there is none.
pub fn load_or_create(state_dir: &Path) -> Result<PrivateKey, SshError> {
    let path = state_dir.join(HOST_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => PrivateKey::from_openssh(text.as_bytes()).map_err(|e| {
            SshError::Gateway(format!(
                "{}: not an OpenSSH private key: {e}",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(&path),
        Err(e) => Err(SshError::Gateway(format!("{}: {e}", path.display()))),
    }
}

fn create(path: &Path) -> Result<PrivateKey, SshError> {
    let gw = |e: String| SshError::Gateway(format!("{}: {e}", path.display()));
    let mut seed = [0u8; 32];
    gateway_core::util::fill_random(&mut seed).map_err(|e| gw(e.to_string()))?;
    let pair = Ed25519Keypair::from_seed(&seed);
    let key = PrivateKey::new(KeypairData::Ed25519(pair), "portcullis gateway host key")
        .map_err(|e| gw(e.to_string()))?;
    let text = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| gw(e.to_string()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| gw(e.to_string()))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| gw(e.to_string()))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| gw(e.to_string()))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reloaded_with_private_mode() {
        let dir = std::env::temp_dir().join(format!("pc-hostkey-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = load_or_create(&dir).unwrap();
        let b = load_or_create(&dir).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(HOST_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
