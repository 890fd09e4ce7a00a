//! Small shared helpers: clocks and random identifiers.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    now_micros() / 1_000_000
}

/// Whether `target` (`host` or `host:port`, IPv6 in brackets) names this machine.
pub fn is_loopback_target(target: &str) -> bool {
    let host = target
        .rsplit_once(':')
        .map_or(target, |(h, _)| h)
        .trim_matches(['[', ']']);
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether `url` (`http://host[:port]/...`) names this machine.
pub fn is_loopback_url(url: &str) -> bool {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    is_loopback_target(rest.split('/').next().unwrap_or_default())
}

/// Lower-case hex of `bytes` in one exact allocation (hot path: every audit event's hash).
pub fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0x0f)]);
    }
    // Only ASCII digits and letters were pushed.
    String::from_utf8(out).unwrap_or_default()
}

/// `n` random bytes from the system CSPRNG, hex-encoded. Aborts if the system has no entropy
/// source: every identifier and key would be guessable, and nothing may go on without them.
#[expect(
    clippy::panic,
    reason = "no entropy source: no safe identifiers or keys can be made"
)]
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    // aws-lc-rs' system RNG only fails if the OS has no entropy source at all.
    if aws_lc_rs::rand::fill(&mut buf).is_err() {
        panic!("system random number generator unavailable");
    }
    hex::encode(buf)
}

/// A new session identifier: sortable by time, unique across replicas.
pub fn new_session_id() -> String {
    format!("s{:x}-{}", now_micros(), random_hex(4))
}

/// Fill `buf` from the system CSPRNG.
pub fn fill_random(buf: &mut [u8]) -> Result<(), crate::Error> {
    aws_lc_rs::rand::fill(buf)
        .map_err(|_| crate::Error::Config("system random number generator unavailable".into()))
}

/// Read the private file `path` (a key), or create it from `make()` on first start. Created
/// without ever leaving a partial or world-readable file: written to a private (0600)
/// temporary file beside it, then linked into place, which fails if another process won the
/// race (its file is then used). A file found readable by others is made owner-only.
/// `what` names the file in log lines.
pub fn load_or_create_private(
    path: &std::path::Path,
    what: &str,
    make: impl FnOnce() -> Result<Vec<u8>, crate::Error>,
) -> Result<Vec<u8>, crate::Error> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::read(path) {
        Ok(bytes) => {
            let mode = std::fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{:o}", mode & 0o777),
                    "{what} was readable by others; setting mode 0600"
                );
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            }
            return Ok(bytes);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let bytes = make()?;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let tmp = dir.join(format!(".key.{}.tmp", random_hex(8)));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => {
            tracing::info!(path = %path.display(), "created the {what}");
            Ok(bytes)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(std::fs::read(path)?),
        Err(e) => Err(e.into()),
    }
}
