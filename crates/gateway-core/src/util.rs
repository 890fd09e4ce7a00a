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

/// `n` random bytes from the system CSPRNG, hex-encoded.
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
