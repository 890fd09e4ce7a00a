//! The state directory holds statement text, identities and keys: only the gateway's own
//! user may read it. Files are created private, and what an earlier version or an operator
//! left open is closed on start.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;
use nix::sys::stat::{Mode, umask};

/// Every file and directory this process creates from now on is private to its user
/// (`umask 077`): 0600 files, 0700 directories.
pub fn restrict_new_files() {
    umask(Mode::from_bits_truncate(0o077));
}

/// Create `dir` (0700) if needed, and make it and everything in it private: directories
/// 0700, files 0600. Fails if a mode cannot be changed (someone else owns the file).
pub fn private_state(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    tighten(dir, 0o700)
}

fn tighten(path: &Path, mode: u32) -> anyhow::Result<()> {
    let meta =
        std::fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    // A symbolic link's target is not ours to change.
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).with_context(
            || {
                format!(
                    "{}: making it private to the gateway's user",
                    path.display()
                )
            },
        )?;
        tracing::info!(path = %path.display(), "made private (was readable by others)");
    }
    if meta.is_dir() {
        for entry in
            std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))?
        {
            let entry = entry?;
            let child = entry.path();
            let is_dir = entry.file_type()?.is_dir();
            tighten(&child, if is_dir { 0o700 } else { 0o600 })?;
        }
    }
    Ok(())
}
