//! Anchoring the chain from the flusher thread (see [`crate::audit::anchor`]).

use std::sync::atomic::Ordering;

use super::Shared;
use crate::audit::anchor::{AnchorFile, AnchorKey};

/// Where and how often the chain's head is signed (see [`crate::audit::anchor`]).
#[derive(Debug)]
pub struct Anchoring {
    pub key: AnchorKey,
    pub file: AnchorFile,
    /// The head is signed this often when it has moved, and at shutdown.
    pub every: std::time::Duration,
}

/// The anchor sink and what was last signed to it; owned by the flusher thread.
pub(super) struct AnchorState {
    pub(super) anchoring: Anchoring,
    pub(super) last_seq: u64,
    pub(super) last_at: Option<std::time::Instant>,
}

impl AnchorState {
    /// Sign the written head if it moved and the interval is up (or `now` is set).
    pub(super) fn tick(&mut self, shared: &Shared, now: bool) {
        if !now
            && self
                .last_at
                .is_some_and(|t| t.elapsed() < self.anchoring.every)
        {
            return;
        }
        self.last_at = Some(std::time::Instant::now());
        let (seq, hash) = {
            let mut io = shared.io();
            if io.head.0 == self.last_seq {
                return;
            }
            // What the anchor vouches for is on disk before the anchor is.
            if let Err(e) = io.sync() {
                shared
                    .counters
                    .anchor_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "cannot sync the audit journal for its anchor");
                return;
            }
            io.head.clone()
        };
        let a = &self.anchoring;
        match a
            .file
            .append(&a.key.sign(seq, &hash, crate::util::now_micros()))
        {
            Ok(()) => {
                self.last_seq = seq;
                shared.counters.anchors.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                shared
                    .counters
                    .anchor_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "cannot write the audit anchor; retried at the next interval");
            }
        }
    }
}
