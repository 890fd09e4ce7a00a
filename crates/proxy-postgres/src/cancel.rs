//! Cancel keys: each session shows the client the gateway's own (pid, key); a CancelRequest
//! carrying it is mapped to the target's key and sent to the target.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::codec;

/// Where to send a cancel for one session.
#[derive(Debug, Clone)]
pub(crate) struct TargetKey {
    pub addr: String,
    pub pid: i32,
    pub key: Vec<u8>,
}

/// The gateway's cancel keys of all live sessions.
#[derive(Debug, Default)]
pub(crate) struct CancelMap {
    inner: Mutex<HashMap<i32, ([u8; 4], TargetKey)>>,
}

impl CancelMap {
    /// Register a session; returns the (pid, key) to give the client, or `None` if the
    /// system random number generator fails.
    pub fn register(&self, target: TargetKey) -> Option<(i32, [u8; 4])> {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // A handful of tries: a collision among live sessions is rare.
        for _ in 0..16 {
            let mut raw = [0u8; 8];
            gateway_core::util::fill_random(&mut raw).ok()?;
            let pid = i32::from_be_bytes([raw[0] & 0x7f, raw[1], raw[2], raw[3]]);
            if pid == 0 || map.contains_key(&pid) {
                continue;
            }
            let key = [raw[4], raw[5], raw[6], raw[7]];
            map.insert(pid, (key, target));
            return Some((pid, key));
        }
        None
    }

    /// Forget a session's key.
    pub fn remove(&self, pid: i32) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pid);
    }

    /// Cancel the running command of the session the key names. Unknown keys are ignored,
    /// as PostgreSQL does, so a cancel reveals nothing.
    pub async fn cancel(&self, pid: i32, key: &[u8]) {
        let target = {
            let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            match map.get(&pid) {
                Some((k, t)) if constant_time_eq(k, key) => t.clone(),
                _ => return,
            }
        };
        let mut buf = BytesMut::with_capacity(16);
        codec::put_cancel_request(&mut buf, target.pid, &target.key);
        match TcpStream::connect(&target.addr).await {
            Ok(mut s) => {
                if let Err(e) = s.write_all(&buf).await {
                    tracing::warn!(error = %e, "sending cancel request to target failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "connecting to target to cancel failed"),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
