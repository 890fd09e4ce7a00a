//! The relay of an open session. Two halves run concurrently in the session's task:
//!
//! - **upstream** (client → target) frames what the client sent, classifies each command,
//!   asks policy, stages the audit event (chained before anything is forwarded), and writes
//!   the whole batch to the target in one write;
//! - **downstream** (target → client) relays results in batches, releasing them only once
//!   the events of the commands they answer are written, substitutes the gateway's error for
//!   a refused command, and records each command's completion.
//!
//! A refused command never reaches the target. In its place the target is sent a statement
//! that cannot parse (a marker random per session): the target answers with an error
//! exactly where the refused command's answer belongs — in order with pipelined commands,
//! aborting an open transaction and skipping to Sync as PostgreSQL does for any error — and
//! downstream replaces that error with the policy's reason.
//!
//! Decisions on Execute use the statements and portals the gateway has seen the client
//! create. That view is optimistic while commands are in flight and is rebuilt from what
//! the target confirmed (ParseComplete, BindComplete, CloseComplete) whenever an error may
//! have skipped something; only statements policy allowed at Parse are ever prepared on the
//! target.

mod downstream;
mod results;
mod review;
mod state;
mod upstream;

use std::sync::Mutex;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gateway_core::Side;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::codec;
use crate::ctx::SessionCtx;
use crate::error::Result;
use state::Shared;

/// Read buffer size per direction.
const READ_CHUNK: usize = 64 * 1024;
/// Largest message accepted from the target (PostgreSQL caps a field at 1 GiB).
const MAX_TARGET_MESSAGE: usize = 1024 * 1024 * 1024 + 1024;
/// How long the target may take to finish what it was sent after the client left.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A FATAL error for the client, written by downstream at a message boundary.
struct Fatal {
    code: &'static str,
    message: String,
}

/// Relay until either side closes. Returns the error that ended the session, if any.
pub(crate) async fn run<C, T>(
    ctx: &SessionCtx,
    client: C,
    client_buf: BytesMut,
    target: T,
    target_buf: BytesMut,
    target_params: &[(String, String)],
) -> Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let marker = format!("PORTCULLIS_DENIED_{}", gateway_core::util::random_hex(6));
    let mut initial = Shared::new(marker);
    for (k, v) in target_params {
        initial.track_parameter(k, v);
    }
    let shared = Mutex::new(initial);
    let (fatal_tx, fatal_rx) = oneshot::channel::<Fatal>();
    // Messages the client half has for the client (notices about a held statement); the
    // target half writes them at a message boundary.
    let (notice_tx, notice_rx) = mpsc::unbounded_channel::<Bytes>();
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (mut target_rd, mut target_wr) = tokio::io::split(target);
    let (outcome, down_finished) = {
        let up = upstream::run(
            ctx,
            &shared,
            &mut client_rd,
            client_buf,
            &mut target_wr,
            notice_tx,
        );
        let down = downstream::run(
            ctx,
            &shared,
            &mut target_rd,
            target_buf,
            &mut client_wr,
            fatal_rx,
            notice_rx,
        );
        tokio::pin!(up, down);
        tokio::select! {
            r = &mut up => {
                if let Err(e) = &r && e.side() != Side::Client {
                    let _ = fatal_tx.send(Fatal { code: e.sqlstate(), message: format!("portcullis: {e}") });
                }
                // Let downstream relay (and audit) what the target still sends, briefly.
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, &mut down).await;
                (r, true)
            }
            r = &mut down => (r, false),
        }
    };
    if !down_finished
        && let Err(e) = &outcome
        && e.side() != Side::Client
    {
        // Downstream ended at a message boundary: tell the client why.
        let mut out = BytesMut::new();
        codec::put_error(
            &mut out,
            "FATAL",
            e.sqlstate(),
            &format!("portcullis: {e}"),
            None,
            None,
        );
        let _ = client_wr.write_all(&out).await;
    }
    let _ = client_wr.shutdown().await;
    let _ = target_wr.shutdown().await;
    outcome
}
