//! The key of the `hash` strategy: 32 random bytes in `<state_dir>/masking.key`, created on
//! first start (mode 0600) and read on every later one, so tokens stay stable across restarts
//! and across replicas that share the state directory's key.

use std::path::Path;

use crate::error::{Error, Result};

/// Length of the key in bytes.
pub const KEY_LEN: usize = 32;

/// Read `<state_dir>/masking.key`, creating it on first start.
pub fn load_or_create_key(state_dir: &Path) -> Result<[u8; KEY_LEN]> {
    std::fs::create_dir_all(state_dir)?;
    let path = state_dir.join("masking.key");
    let bytes = crate::util::load_or_create_private(&path, "masking key", || {
        let mut key = [0u8; KEY_LEN];
        crate::util::fill_random(&mut key)?;
        Ok(key.to_vec())
    })?;
    bytes.as_slice().try_into().map_err(|_| {
        Error::Config(format!(
            "{}: a masking key is {KEY_LEN} bytes, this file has {}",
            path.display(),
            bytes.len()
        ))
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

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
