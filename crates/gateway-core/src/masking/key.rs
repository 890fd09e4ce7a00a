//! The key of the `hash` strategy: 32 random bytes in `<state_dir>/masking.key`, created on
//! first start (mode 0600) and read on every later one, so tokens stay stable across restarts
//! and across replicas that share the state directory's key.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, Result};

/// Length of the key in bytes.
pub const KEY_LEN: usize = 32;

/// Read `<state_dir>/masking.key`, creating it on first start.
pub fn load_or_create_key(state_dir: &Path) -> Result<[u8; KEY_LEN]> {
    std::fs::create_dir_all(state_dir)?;
    let path = state_dir.join("masking.key");
    let bytes = match std::fs::read(&path) {
        Ok(b) => {
            let mode = std::fs::metadata(&path)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "masking key was readable by others; setting mode 0600");
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            }
            b
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(state_dir, &path)?,
        Err(e) => return Err(e.into()),
    };
    bytes.as_slice().try_into().map_err(|_| {
        Error::Config(format!(
            "{}: a masking key is {KEY_LEN} bytes, this file has {}",
            path.display(),
            bytes.len()
        ))
    })
}

/// Write a fresh key to a private temporary file, then link it into place: never a partial
/// or world-readable key, and a concurrent starter's key wins the race for both.
fn create(dir: &Path, path: &Path) -> Result<Vec<u8>> {
    let mut key = [0u8; KEY_LEN];
    crate::util::fill_random(&mut key)?;
    let tmp = dir.join(format!(".masking-key.{}.tmp", crate::util::random_hex(8)));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&key)?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => {
            tracing::info!(path = %path.display(), "created the masking key");
            Ok(key.to_vec())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(std::fs::read(path)?),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_private_and_stable() {
        let dir = std::env::temp_dir().join(format!(
            "portcullis-maskkey-{}-{}",
            std::process::id(),
            crate::util::random_hex(4)
        ));
        let a = load_or_create_key(&dir).unwrap();
        let b = load_or_create_key(&dir).unwrap();
        assert_eq!(a, b);
        let mode = std::fs::metadata(dir.join("masking.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.join("masking.key"), b"short").unwrap();
        assert!(load_or_create_key(&dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
