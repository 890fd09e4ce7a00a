//! The gateway's own SSH host key: created on first start, kept in the state directory
//! readable by the gateway's user only.

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
    let gw = |e: String| SshError::Gateway(format!("{}: {e}", path.display()));
    std::fs::create_dir_all(state_dir).map_err(|e| gw(e.to_string()))?;
    let text = gateway_core::util::load_or_create_private(&path, "SSH host key", || {
        let mut seed = [0u8; 32];
        gateway_core::util::fill_random(&mut seed)?;
        let pair = Ed25519Keypair::from_seed(&seed);
        let key = PrivateKey::new(KeypairData::Ed25519(pair), "portcullis gateway host key")
            .and_then(|k| k.to_openssh(LineEnding::LF))
            .map_err(|e| {
                gateway_core::Error::Config(format!("cannot create the SSH host key: {e}"))
            })?;
        Ok(key.as_bytes().to_vec())
    })
    .map_err(|e| gw(e.to_string()))?;
    PrivateKey::from_openssh(&text).map_err(|e| gw(format!("not an OpenSSH private key: {e}")))
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
