//! One session channel from open to close. Until its start request (exec, shell,
//! subsystem) is decided, one loop serves both sides; from then on each direction runs on
//! its own, so a side waiting for its peer's window never stops the other side from being
//! drained (russh queues a bounded number of messages per channel and stalls its session
//! while the queue is full). Data moves as the `Bytes` russh decoded it, never copied.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway_core::SshKind;
use russh::{Channel, ChannelId, ChannelMsg, ChannelReadHalf, ChannelWriteHalf, client, server};
use tokio::sync::mpsc;

use crate::session::SessionCtx;
use gateway_core::gate::{Admitted, Held};
use gateway_core::recording::{Asciicast, Header, Recorder};

/// What the handler tells a channel's relay about its start request.
pub(crate) enum Ctl {
    /// Policy allowed it: forward it to the target.
    Go(Started),
    /// Refused (and already answered to the client): the target never sees it.
    Stop,
    /// Held for approval `id` (the client has been told): forward it once approved.
    Hold { held: Box<Held>, kind: SshKind },
}

/// Client messages kept while a request is held (stdin sent ahead of the approval).
const MAX_HELD_MESSAGES: usize = 64;

/// Longest wait for the handler's decision on a request the relay passes on.
const DECISION_WAIT: Duration = Duration::from_secs(15);

/// How long one direction may outlive the other once its side has closed.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// An admitted start request: the gate's proof is what lets the relay forward it.
pub(crate) struct Started {
    pub kind: SshKind,
    pub admitted: Admitted,
}

impl Started {
    /// Command number within the session (links audit `command` and `command_end`).
    fn number(&self) -> u64 {
        self.admitted.number()
    }
}

/// Terminal size and type from the client's pty request.
struct Pty {
    term: String,
    cols: u32,
    rows: u32,
}

type TargetTx = ChannelWriteHalf<client::Msg>;

/// The target's side of the channel; gone once a request was refused.
struct Target {
    rx: ChannelReadHalf,
    tx: TargetTx,
}

/// The recording of an interactive shell, written from both directions.
type Rec = Mutex<Option<Box<dyn Recorder>>>;

fn record(rec: &Rec, f: impl FnOnce(&mut dyn Recorder)) {
    if let Some(r) = rec.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
        f(r.as_mut());
    }
}

/// Whether a relay loop goes on after a message.
#[derive(PartialEq)]
enum Flow {
    Go,
    End,
}

/// Client to target.
#[derive(Default)]
struct Up {
    bytes: u64,
    pty: Option<Pty>,
    error: Option<String>,
}

/// Target to client.
#[derive(Default)]
struct Down {
    bytes: u64,
    exit_status: Option<u32>,
    exit_signal: Option<String>,
    error: Option<String>,
}

/// Relay one channel until either side closes it. `ctl` carries the decision on the
/// start request; a channel without one (a forward) has `None` and relays from the start.
pub(crate) async fn run(
    ctx: Arc<SessionCtx>,
    mut client: Channel<server::Msg>,
    backend: Channel<client::Msg>,
    handle: server::Handle,
    ctl: Option<mpsc::Receiver<Ctl>>,
) {
    let id = client.id();
    let (rx, tx) = backend.split();
    let mut target = Some(Target { rx, tx });
    let rec: Rec = Mutex::new(None);
    let (mut up, mut down) = (Up::default(), Down::default());
    let mut started = None;

    if let Some(mut ctl) = ctl {
        // Until the start request is allowed, one loop serves both sides: nothing flows
        // in bulk before the target has been asked to start anything.
        loop {
            tokio::select! {
                m = client.wait() => {
                    let Some(m) = m else {
                        close_target(&target).await;
                        return finish(&ctx, &rec, up, down, None).await;
                    };
                    let start = match m {
                        ChannelMsg::Exec { command, .. } => Start::Exec(command),
                        ChannelMsg::RequestShell { .. } => Start::Shell,
                        ChannelMsg::RequestSubsystem { name, .. } => Start::Subsystem(name),
                        m => {
                            let tx = target.as_ref().map(|t| &t.tx);
                            if up.forward(&ctx, m, tx, &rec).await == Flow::End {
                                return finish(&ctx, &rec, up, down, None).await;
                            }
                            continue;
                        }
                    };
                    let Some((s, held)) =
                        decided(&ctx, &mut ctl, &mut target, &mut client, &handle).await
                    else {
                        return finish(&ctx, &rec, up, down, None).await;
                    };
                    let (Some(s), Some(t)) = (s, &target) else { continue };
                    let _ = match start {
                        Start::Exec(command) => t.tx.exec(true, command).await,
                        Start::Shell => {
                            *rec.lock().unwrap_or_else(|p| p.into_inner()) =
                                open_recording(&ctx, &s, up.pty.as_ref());
                            t.tx.request_shell(true).await
                        }
                        Start::Subsystem(name) => t.tx.request_subsystem(true, name).await,
                    };
                    started = Some((s, Instant::now()));
                    for m in held {
                        up.forward(&ctx, m, Some(&t.tx), &rec).await;
                    }
                    break;
                }
                m = next(&mut target) => {
                    let tx = target.as_ref().map(|t| &t.tx);
                    if down.relay(m, &handle, id, tx, &rec).await == Flow::End {
                        return finish(&ctx, &rec, up, down, None).await;
                    }
                }
            }
        }
    }

    if let Some(Target { mut rx, tx }) = target {
        let to_target = async {
            while let Some(m) = client.wait().await {
                if up.forward(&ctx, m, Some(&tx), &rec).await == Flow::End {
                    return;
                }
            }
            let _ = tx.close().await;
        };
        let to_client = async {
            loop {
                let m = rx.wait().await;
                if down.relay(m, &handle, id, Some(&tx), &rec).await == Flow::End {
                    return;
                }
            }
        };
        both(to_target, to_client).await;
    }
    finish(&ctx, &rec, up, down, started).await
}

/// The request that starts a channel, kept while policy decides it.
enum Start {
    Exec(Vec<u8>),
    Shell,
    Subsystem(String),
}

/// Run both directions until one ends, then give the other a moment to see its side close.
async fn both(a: impl Future<Output = ()>, b: impl Future<Output = ()>) {
    tokio::pin!(a, b);
    tokio::select! {
        () = &mut a => { let _ = tokio::time::timeout(CLOSE_GRACE, b).await; }
        () = &mut b => { let _ = tokio::time::timeout(CLOSE_GRACE, a).await; }
    }
}

impl Up {
    /// Forward one client message (other than a start request) to the target.
    async fn forward(
        &mut self,
        ctx: &SessionCtx,
        m: ChannelMsg,
        tx: Option<&TargetTx>,
        rec: &Rec,
    ) -> Flow {
        match m {
            ChannelMsg::Data { data } => {
                self.bytes += data.len() as u64;
                record(rec, |r| r.input(&data));
                if let Some(b) = tx
                    && b.data_bytes(data).await.is_err()
                {
                    self.error = Some("target channel closed while sending".into());
                    return Flow::End;
                }
            }
            ChannelMsg::ExtendedData { data, ext } => {
                if let Some(b) = tx {
                    let _ = b.extended_data_bytes(ext, data).await;
                }
            }
            ChannelMsg::Eof => {
                if let Some(b) = tx {
                    let _ = b.eof().await;
                }
            }
            ChannelMsg::Close => {
                if let Some(b) = tx {
                    let _ = b.close().await;
                }
                return Flow::End;
            }
            ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                pix_width,
                pix_height,
                terminal_modes,
                ..
            } => {
                if let Some(b) = tx {
                    let _ = b
                        .request_pty(
                            false,
                            &term,
                            col_width,
                            row_height,
                            pix_width,
                            pix_height,
                            &terminal_modes,
                        )
                        .await;
                }
                self.pty = Some(Pty {
                    term,
                    cols: col_width,
                    rows: row_height,
                });
            }
            ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            } => {
                if crate::names::env_allowed(&variable_name, &ctx.conn.allow_env)
                    && let Some(b) = tx
                {
                    let _ = b.set_env(false, variable_name, variable_value).await;
                }
            }
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                pix_width,
                pix_height,
            } => {
                record(rec, |r| r.resize(col_width, row_height));
                if let Some(b) = tx {
                    let _ = b
                        .window_change(col_width, row_height, pix_width, pix_height)
                        .await;
                }
            }
            ChannelMsg::Signal { signal } => {
                if let Some(b) = tx {
                    let _ = b.signal(signal).await;
                }
            }
            ChannelMsg::AgentForward { .. } => {
                // The handler decides it right after this message is queued; the target
                // must see it before the start request, so wait here.
                let mut decision = ctx.agent.subscribe();
                let allowed = matches!(
                    tokio::time::timeout(DECISION_WAIT, decision.wait_for(Option::is_some))
                        .await
                        .map(|r| r.map(|v| *v)),
                    Ok(Ok(Some(true)))
                );
                if allowed && let Some(b) = tx {
                    let _ = b.agent_forward(false).await;
                }
            }
            // Start requests after the first, forwarding requests and the like are
            // answered by the handler (refused); nothing reaches the target.
            _ => {}
        }
        Flow::Go
    }
}

impl Down {
    /// Relay one target message (`None`: the target's side is gone) to the client.
    async fn relay(
        &mut self,
        m: Option<ChannelMsg>,
        handle: &server::Handle,
        id: ChannelId,
        tx: Option<&TargetTx>,
        rec: &Rec,
    ) -> Flow {
        let Some(m) = m else {
            let _ = handle.close(id).await;
            return Flow::End;
        };
        match m {
            ChannelMsg::Data { data } => {
                self.bytes += data.len() as u64;
                record(rec, |r| r.output(&data));
                if handle.data(id, data).await.is_err() {
                    self.error = Some("client channel closed while sending".into());
                    if let Some(b) = tx {
                        let _ = b.close().await;
                    }
                    return Flow::End;
                }
            }
            ChannelMsg::ExtendedData { data, ext } => {
                self.bytes += data.len() as u64;
                record(rec, |r| r.output(&data));
                let _ = handle.extended_data(id, ext, data).await;
            }
            ChannelMsg::ExitStatus { exit_status } => {
                self.exit_status = Some(exit_status);
                let _ = handle.exit_status_request(id, exit_status).await;
            }
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                lang_tag,
            } => {
                self.exit_signal = Some(format!("{signal_name:?}"));
                let _ = handle
                    .exit_signal_request(id, signal_name, core_dumped, error_message, lang_tag)
                    .await;
            }
            ChannelMsg::Eof => {
                let _ = handle.eof(id).await;
            }
            ChannelMsg::Close => {
                let _ = handle.close(id).await;
                return Flow::End;
            }
            ChannelMsg::Failure => {
                // The target refused the start request it was sent.
                let msg = Bytes::from_static(b"portcullis: the target refused the request\r\n");
                let _ = handle.extended_data(id, 1, msg).await;
                let _ = handle.exit_status_request(id, 255).await;
                let _ = handle.eof(id).await;
                let _ = handle.close(id).await;
                if let Some(b) = tx {
                    let _ = b.close().await;
                }
                self.error = Some("the target refused the request".into());
                return Flow::End;
            }
            _ => {}
        }
        Flow::Go
    }
}

/// Close the recording and write the command's end to audit.
async fn finish(
    ctx: &SessionCtx,
    rec: &Rec,
    up: Up,
    down: Down,
    started: Option<(Started, Instant)>,
) {
    ctx.bytes_in.fetch_add(up.bytes, Relaxed);
    ctx.bytes_out.fetch_add(down.bytes, Relaxed);
    let recording = rec
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .map(|r| {
            let rel = r.relative().to_string();
            if !r.finish() {
                tracing::warn!(recording = %rel, "the recording could not be written completely");
            }
            rel
        });
    let Some((s, t)) = started else { return };
    let mut ev = ctx.gate.complete(s.number());
    ev.action = Some(s.kind.cedar_id().into());
    ev.duration_us = Some(t.elapsed().as_micros() as u64);
    ev.error = up.error.or(down.error);
    let mut detail = serde_json::json!({
        "bytes_in": up.bytes,
        "bytes_out": down.bytes,
    });
    if let Some(code) = down.exit_status {
        detail["exit_status"] = code.into();
    }
    if let Some(sig) = down.exit_signal {
        detail["exit_signal"] = sig.into();
    }
    if let Some(rel) = recording {
        detail["recording"] = rel.into();
    }
    ev.detail = Some(detail);
    if let Err(e) = ctx.services.audit.record_later(ev).await {
        tracing::error!(error = %e, "could not record the end of an ssh command");
    }
}

/// The next message from the target channel; pending forever once it is gone.
async fn next(target: &mut Option<Target>) -> Option<ChannelMsg> {
    match target {
        Some(t) => t.rx.wait().await,
        None => std::future::pending().await,
    }
}

async fn close_target(target: &Option<Target>) {
    if let Some(t) = target {
        let _ = t.tx.close().await;
    }
}

/// Wait for the handler's decision on the start request just seen, and for its approval
/// when it is held. A refusal closes the target channel: the target never sees the
/// request. `None` when the client went away while the request was held; otherwise the
/// request to forward (if any) and the client messages that arrived while it was held.
async fn decided(
    ctx: &SessionCtx,
    ctl: &mut mpsc::Receiver<Ctl>,
    target: &mut Option<Target>,
    client: &mut Channel<server::Msg>,
    handle: &server::Handle,
) -> Option<(Option<Started>, Vec<ChannelMsg>)> {
    let (held, kind) = match ctl.recv().await {
        Some(Ctl::Go(s)) => return Some((Some(s), Vec::new())),
        Some(Ctl::Stop) | None => {
            close_target(target).await;
            *target = None;
            return Some((None, Vec::new()));
        }
        Some(Ctl::Hold { held, kind }) => (held, kind),
    };
    let approval = held.request.id.clone();
    let approvals = &ctx.services.approvals;
    let wait = approvals.wait(&approval);
    tokio::pin!(wait);
    let mut kept = Vec::new();
    let outcome = loop {
        tokio::select! {
            o = &mut wait => break o,
            m = client.wait(), if kept.len() < MAX_HELD_MESSAGES => match m {
                None | Some(ChannelMsg::Close) => {
                    let _ = approvals
                        .cancel_held(&approval, &ctx.session_id, "the client disconnected while the command was held")
                        .await;
                    close_target(target).await;
                    return None;
                }
                Some(m) => kept.push(m),
            },
        }
    };
    let id = client.id();
    let refusal = match ctx.gate.resolve(held, &outcome).await {
        Ok(admitted) => {
            let note = format!("portcullis: approval {approval} granted; running\r\n");
            let _ = handle.extended_data(id, 1, Bytes::from(note)).await;
            return Some((Some(Started { kind, admitted }), kept));
        }
        Err(r) => r,
    };
    let msg = format!("portcullis: {}\r\n", refusal.message);
    let _ = handle.extended_data(id, 1, Bytes::from(msg)).await;
    let _ = handle
        .exit_status_request(id, crate::handler::EXIT_REFUSED)
        .await;
    let _ = handle.eof(id).await;
    let _ = handle.close(id).await;
    close_target(target).await;
    *target = None;
    Some((None, Vec::new()))
}

/// Open the recording of an interactive shell.
fn open_recording(ctx: &SessionCtx, s: &Started, pty: Option<&Pty>) -> Option<Box<dyn Recorder>> {
    let (term, cols, rows) = match pty {
        Some(p) => (p.term.as_str(), p.cols, p.rows),
        None => ("", 80, 24),
    };
    let title = format!("{} on {}", ctx.identity().principal(), ctx.conn.name);
    let name = format!("{}-{}", ctx.session_id, s.number());
    match Asciicast::create(
        &ctx.services.config.state_dir(),
        &name,
        &Header {
            width: cols,
            height: rows,
            term,
            title: &title,
        },
    ) {
        Ok(mut r) => {
            r.marker(&format!(
                "{} allowed by [{}]",
                s.kind.cedar_id(),
                s.admitted.policies().join(", ")
            ));
            Some(Box::new(r))
        }
        Err(e) => {
            tracing::error!(error = %e, "could not open the session recording");
            None
        }
    }
}
