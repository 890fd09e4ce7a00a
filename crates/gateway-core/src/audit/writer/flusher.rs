//! The flusher thread.

use super::{AnchorState, FLUSH_EVERY, Shared, mapped};
use crate::audit::indexer::IndexMsg;

/// The flusher thread: writes staged events, retries after a failed write, signs the head
/// at its interval, and at shutdown writes the rest, signs the final head, then stops the
/// indexer.
pub(super) fn flush_loop(shared: &Shared, mut anchored: Option<AnchorState>) {
    let is_mapped = shared.chain().mapped.is_some();
    let finished = if is_mapped {
        mapped::hand_over_loop(shared, &mut anchored)
    } else {
        write_loop(shared, &mut anchored)
    };
    if !finished {
        return;
    }
    let mut io = shared.io();
    io.to_indexer(IndexMsg::Stop);
    io.join_indexer();
    // The journal is free for the next writer or a recovery.
    io.lock = None;
}

/// The flusher with the `write` journal; false when the writer was abandoned (tests).
fn write_loop(shared: &Shared, anchored: &mut Option<AnchorState>) -> bool {
    loop {
        if let Some(a) = anchored.as_mut() {
            a.tick(shared, false);
        }
        let (staged, closed) = {
            let chain = shared.chain();
            if chain.abandoned {
                return false;
            }
            if chain.events.is_empty() && !chain.closed {
                let (chain, _) = shared
                    .wake
                    .wait_timeout(chain, FLUSH_EVERY)
                    .unwrap_or_else(|e| e.into_inner());
                if chain.abandoned {
                    return false;
                }
                (chain.events.last().map(|e| e.seq), chain.closed)
            } else {
                (chain.events.last().map(|e| e.seq), chain.closed)
            }
        };
        if let Some(seq) = staged
            && let Err(e) = shared.flush(seq)
        {
            if closed {
                tracing::error!(error = %e, "audit events staged at shutdown could not be written");
                break;
            }
            // Retried at the next tick.
            std::thread::sleep(FLUSH_EVERY);
            continue;
        }
        if closed {
            if let Some(a) = anchored.as_mut() {
                a.tick(shared, true);
            }
            break;
        }
        if staged.is_some() {
            // Let a few more events gather before the next write.
            std::thread::sleep(FLUSH_EVERY);
        }
    }
    true
}
