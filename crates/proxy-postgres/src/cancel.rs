//! Cancel keys: each session shows the client the gateway's own (pid, key); a CancelRequest
//! carrying it is mapped to the target's key and sent to the target, or, while the session
//! holds a statement for approval, cancels that request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

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
    /// TLS to the target, when the connection's sslmode asks for it (cancels too).
    pub tls: Option<crate::target_tls::TargetTls>,
}

/// A session's statement held for approval, shared with the cancel map.
#[derive(Debug, Default)]
pub(crate) struct HoldControl {
    /// The approval id while a statement is held.
    held: Mutex<Option<String>>,
    cancel: Notify,
}

impl HoldControl {
    /// Mark `id` as held (or nothing, with `None`).
    pub fn set(&self, id: Option<String>) {
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = id;
    }

    /// Ask the held statement's wait to end; false when nothing is held.
    pub fn cancel(&self) -> bool {
        let held = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        if held {
            self.cancel.notify_one();
        }
        held
    }

    /// Resolves once a cancel arrives for the held statement.
    pub async fn cancelled(&self) {
        self.cancel.notified().await;
    }
}

/// The gateway's cancel keys of all live sessions.
#[derive(Debug, Default)]
pub(crate) struct CancelMap {
    inner: Mutex<HashMap<i32, Entry>>,
}

type Entry = ([u8; 4], TargetKey, Arc<HoldControl>);

impl CancelMap {
    /// Register a session; returns the (pid, key) to give the client, or `None` if the
    /// system random number generator fails.
    pub fn register(&self, target: TargetKey, hold: Arc<HoldControl>) -> Option<(i32, [u8; 4])> {
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
            map.insert(pid, (key, target, hold));
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

    /// Cancel the running command of the session the key names: its approval request while
    /// a statement is held, else the target's command. Unknown keys are ignored, as
    /// PostgreSQL does, so a cancel reveals nothing.
    pub async fn cancel(&self, pid: i32, key: &[u8]) {
        let target = {
            let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            match map.get(&pid) {
                Some((k, t, hold)) if constant_time_eq(k, key) => {
                    if hold.cancel() {
                        return;
                    }
                    t.clone()
                }
                _ => return,
            }
        };
        let mut buf = BytesMut::with_capacity(16);
        codec::put_cancel_request(&mut buf, target.pid, &target.key);
        let tcp = match TcpStream::connect(&target.addr).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "connecting to target to cancel failed");
                return;
            }
        };
        let mut s = match &target.tls {
            Some(tls) => match crate::target_tls::start(tcp, tls).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "TLS to target to cancel failed");
                    return;
                }
            },
            None => crate::stream::TargetStream::Plain(tcp),
        };
        if let Err(e) = s.write_all(&buf).await {
            tracing::warn!(error = %e, "sending cancel request to target failed");
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
