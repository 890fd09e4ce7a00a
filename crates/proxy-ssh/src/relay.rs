//! One session channel from open to close: client messages go to the target channel in
//! order, target output comes back, and the start request (exec, shell, subsystem) waits
//! for the handler's policy decision. Data moves as the `Bytes` russh decoded it, never
//! copied.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use bytes::Bytes;
use gateway_core::SshKind;
use gateway_core::audit::{AuditEvent, EventKind};
use russh::{Channel, ChannelMsg, client, server};
use tokio::sync::mpsc;

use crate::handler::SessionCtx;
use crate::record::{Header, Recorder};

/// What the handler tells a channel's relay about its start request.
pub(crate) enum Ctl {
    /// Policy allowed it: forward it to the target.
    Go(Started),
    /// Refused (and already answered to the client): the target never sees it.
    Stop,
    /// Held for approval `id` (the client has been told): forward it once approved.
    Hold { id: String, started: Started },
}

/// Client messages kept while a request is held (stdin sent ahead of the approval).
const MAX_HELD_MESSAGES: usize = 64;

/// An allowed start request.
pub(crate) struct Started {
    pub kind: SshKind,
    /// Command number within the session (links audit `command` and `command_end`).
    pub number: u64,
    /// Policies that allowed it, for the recording's marker.
    pub policies: Vec<String>,
}

/// Terminal size and type from the client's pty request.
struct Pty {
    term: String,
    cols: u32,
    rows: u32,
}

/// Relay one session channel until either side closes it.
pub(crate) async fn run(
    ctx: Arc<SessionCtx>,
    mut client: Channel<server::Msg>,
    backend: Channel<client::Msg>,
    handle: server::Handle,
    mut ctl: mpsc::Receiver<Ctl>,
) {
    let id = client.id();
    let mut backend = Some(backend);
    let mut pty: Option<Pty> = None;
    let mut rec: Option<Recorder> = None;
    let mut started: Option<(Started, Instant)> = None;
    let mut exit_status: Option<u32> = None;
    let mut exit_signal: Option<String> = None;
    let (mut bytes_in, mut bytes_out) = (0u64, 0u64);
    let mut error: Option<String> = None;

    loop {
        tokio::select! {
            m = client.wait() => {
                let Some(m) = m else {
                    close_backend(&backend).await;
                    break;
                };
                match m {
                    ChannelMsg::Data { data } => {
                        bytes_in += data.len() as u64;
                        if let Some(r) = rec.as_mut() {
                            r.input(&data);
                        }
                        if let Some(b) = &backend
                            && b.data_bytes(data).await.is_err()
                        {
                            error = Some("target channel closed while sending".into());
                            break;
                        }
                    }
                    ChannelMsg::ExtendedData { data, ext } => {
                        if let Some(b) = &backend {
                            let _ = b.extended_data_bytes(ext, data).await;
                        }
                    }
                    ChannelMsg::Eof => {
                        if let Some(b) = &backend {
                            let _ = b.eof().await;
                        }
                    }
                    ChannelMsg::Close => {
                        close_backend(&backend).await;
                        break;
                    }
                    ChannelMsg::RequestPty { term, col_width, row_height, pix_width, pix_height, terminal_modes, .. } => {
                        if let Some(b) = &backend {
                            let _ = b
                                .request_pty(false, &term, col_width, row_height, pix_width, pix_height, &terminal_modes)
                                .await;
                        }
                        pty = Some(Pty { term, cols: col_width, rows: row_height });
                    }
                    ChannelMsg::SetEnv { variable_name, variable_value, .. } => {
                        if crate::names::env_allowed(&variable_name, &ctx.conn.allow_env)
                            && let Some(b) = &backend
                        {
                            let _ = b.set_env(false, variable_name, variable_value).await;
                        }
                    }
                    ChannelMsg::WindowChange { col_width, row_height, pix_width, pix_height } => {
                        if let Some(r) = rec.as_mut() {
                            r.resize(col_width, row_height);
                        }
                        if let Some(b) = &backend {
                            let _ = b.window_change(col_width, row_height, pix_width, pix_height).await;
                        }
                    }
                    ChannelMsg::Signal { signal } => {
                        if let Some(b) = &backend {
                            let _ = b.signal(signal).await;
                        }
                    }
                    ChannelMsg::Exec { command, .. } if started.is_none() => {
                        let d = decided(&ctx, &mut ctl, &mut backend, &mut client, &handle).await;
                        let Some((s, held)) = d else { break };
                        if let Some(s) = s {
                            if let Some(b) = &backend {
                                let _ = b.exec(true, command).await;
                            }
                            started = Some((s, Instant::now()));
                            for m in held {
                                forward_held(&backend, m, &mut bytes_in).await;
                            }
                        }
                    }
                    ChannelMsg::RequestShell { .. } if started.is_none() => {
                        let d = decided(&ctx, &mut ctl, &mut backend, &mut client, &handle).await;
                        let Some((s, held)) = d else { break };
                        if let Some(s) = s {
                            rec = open_recording(&ctx, &s, pty.as_ref());
                            if let Some(b) = &backend {
                                let _ = b.request_shell(true).await;
                            }
                            started = Some((s, Instant::now()));
                            for m in held {
                                forward_held(&backend, m, &mut bytes_in).await;
                            }
                        }
                    }
                    ChannelMsg::RequestSubsystem { name, .. } if started.is_none() => {
                        let d = decided(&ctx, &mut ctl, &mut backend, &mut client, &handle).await;
                        let Some((s, held)) = d else { break };
                        if let Some(s) = s {
                            if let Some(b) = &backend {
                                let _ = b.request_subsystem(true, name).await;
                            }
                            started = Some((s, Instant::now()));
                            for m in held {
                                forward_held(&backend, m, &mut bytes_in).await;
                            }
                        }
                    }
                    // Answered by the handler (refused); nothing reaches the target.
                    _ => {}
                }
            }
            m = next(&mut backend) => {
                let Some(m) = m else {
                    let _ = handle.close(id).await;
                    break;
                };
                match m {
                    ChannelMsg::Data { data } => {
                        bytes_out += data.len() as u64;
                        if let Some(r) = rec.as_mut() {
                            r.output(&data);
                        }
                        if handle.data(id, data).await.is_err() {
                            error = Some("client channel closed while sending".into());
                            close_backend(&backend).await;
                            break;
                        }
                    }
                    ChannelMsg::ExtendedData { data, ext } => {
                        bytes_out += data.len() as u64;
                        if let Some(r) = rec.as_mut() {
                            r.output(&data);
                        }
                        let _ = handle.extended_data(id, ext, data).await;
                    }
                    ChannelMsg::ExitStatus { exit_status: s } => {
                        exit_status = Some(s);
                        let _ = handle.exit_status_request(id, s).await;
                    }
                    ChannelMsg::ExitSignal { signal_name, core_dumped, error_message, lang_tag } => {
                        exit_signal = Some(format!("{signal_name:?}"));
                        let _ = handle
                            .exit_signal_request(id, signal_name, core_dumped, error_message, lang_tag)
                            .await;
                    }
                    ChannelMsg::Eof => {
                        let _ = handle.eof(id).await;
                    }
                    ChannelMsg::Close => {
                        let _ = handle.close(id).await;
                        break;
                    }
                    ChannelMsg::Failure => {
                        // The target refused the start request it was sent.
                        let msg = Bytes::from_static(b"portcullis: the target refused the request\r\n");
                        let _ = handle.extended_data(id, 1, msg).await;
                        let _ = handle.exit_status_request(id, 255).await;
                        let _ = handle.eof(id).await;
                        let _ = handle.close(id).await;
                        close_backend(&backend).await;
                        error = Some("the target refused the request".into());
                        break;
                    }
                    _ => {}
                }
            }
        }
    }

    ctx.bytes_in.fetch_add(bytes_in, Relaxed);
    ctx.bytes_out.fetch_add(bytes_out, Relaxed);
    let recording = rec.map(|r| {
        let rel = r.relative.clone();
        if !r.finish() {
            tracing::warn!(recording = %rel, "the recording could not be written completely");
        }
        rel
    });
    if let Some((s, t)) = started {
        let mut ev = AuditEvent::new(EventKind::CommandEnd, &ctx.session_id);
        ev.connection = Some(ctx.conn.name.clone());
        ev.protocol = Some("ssh".into());
        ev.command = Some(s.number);
        ev.action = Some(s.kind.cedar_id().into());
        ev.duration_us = Some(t.elapsed().as_micros() as u64);
        ev.error = error;
        let mut detail = serde_json::json!({
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
        });
        if let Some(code) = exit_status {
            detail["exit_status"] = code.into();
        }
        if let Some(sig) = exit_signal {
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
}

/// The next message from the target channel; pending forever once it is gone.
async fn next(backend: &mut Option<Channel<client::Msg>>) -> Option<ChannelMsg> {
    match backend {
        Some(b) => b.wait().await,
        None => std::future::pending().await,
    }
}

async fn close_backend(backend: &Option<Channel<client::Msg>>) {
    if let Some(b) = backend {
        let _ = b.close().await;
    }
}

/// Wait for the handler's decision on the start request just seen, and for its approval
/// when it is held. A refusal closes the target channel: the target never sees the
/// request. `None` when the client went away while the request was held; otherwise the
/// request to forward (if any) and the client messages that arrived while it was held.
async fn decided(
    ctx: &SessionCtx,
    ctl: &mut mpsc::Receiver<Ctl>,
    backend: &mut Option<Channel<client::Msg>>,
    client: &mut Channel<server::Msg>,
    handle: &server::Handle,
) -> Option<(Option<Started>, Vec<ChannelMsg>)> {
    let (approval, started) = match ctl.recv().await {
        Some(Ctl::Go(s)) => return Some((Some(s), Vec::new())),
        Some(Ctl::Stop) | None => {
            close_backend(backend).await;
            *backend = None;
            return Some((None, Vec::new()));
        }
        Some(Ctl::Hold { id, started }) => (id, started),
    };
    let approvals = &ctx.services.approvals;
    let wait = approvals.wait(&approval);
    tokio::pin!(wait);
    let mut held = Vec::new();
    let outcome = loop {
        tokio::select! {
            o = &mut wait => break o,
            m = client.wait(), if held.len() < MAX_HELD_MESSAGES => match m {
                None | Some(ChannelMsg::Close) => {
                    let _ = approvals
                        .cancel_held(&approval, &ctx.session_id, "the client disconnected while the command was held")
                        .await;
                    close_backend(backend).await;
                    return None;
                }
                Some(m) => held.push(m),
            },
        }
    };
    let id = client.id();
    let mut ev = AuditEvent::new(EventKind::Command, &ctx.session_id);
    ev.identity = Some(gateway_core::audit::IdentityRecord::from(&ctx.identity));
    ev.connection = Some(ctx.conn.name.clone());
    ev.protocol = Some("ssh".into());
    ev.command = Some(started.number);
    ev.action = Some(started.kind.cedar_id().into());
    ev.approval = Some(approval.clone());
    ev.reason = Some(outcome.message());
    if outcome.is_approved() {
        ev.verdict = Some(gateway_core::audit::Verdict::Allow);
        if ctx.services.audit.record(ev).await.is_ok() {
            let note = format!("portcullis: approval {approval} granted; running\r\n");
            let _ = handle.extended_data(id, 1, Bytes::from(note)).await;
            return Some((Some(started), held));
        }
    } else {
        ev.verdict = Some(gateway_core::audit::Verdict::Deny);
        let _ = ctx.services.audit.record_later(ev).await;
    }
    let msg = format!("portcullis: {}\r\n", outcome.message());
    let _ = handle.extended_data(id, 1, Bytes::from(msg)).await;
    let _ = handle
        .exit_status_request(id, crate::handler::EXIT_REFUSED)
        .await;
    let _ = handle.eof(id).await;
    let _ = handle.close(id).await;
    close_backend(backend).await;
    *backend = None;
    Some((None, Vec::new()))
}

/// Forward a client message that arrived while its request was held.
async fn forward_held(backend: &Option<Channel<client::Msg>>, m: ChannelMsg, bytes_in: &mut u64) {
    let Some(b) = backend else { return };
    match m {
        ChannelMsg::Data { data } => {
            *bytes_in += data.len() as u64;
            let _ = b.data_bytes(data).await;
        }
        ChannelMsg::Eof => {
            let _ = b.eof().await;
        }
        ChannelMsg::WindowChange {
            col_width,
            row_height,
            pix_width,
            pix_height,
        } => {
            let _ = b
                .window_change(col_width, row_height, pix_width, pix_height)
                .await;
        }
        _ => {}
    }
}

/// Open the recording of an interactive shell.
fn open_recording(ctx: &SessionCtx, s: &Started, pty: Option<&Pty>) -> Option<Recorder> {
    let (term, cols, rows) = match pty {
        Some(p) => (p.term.as_str(), p.cols, p.rows),
        None => ("", 80, 24),
    };
    let title = format!("{} on {}", ctx.identity.principal(), ctx.conn.name);
    let name = format!("{}-{}", ctx.session_id, s.number);
    match Recorder::create(
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
                s.policies.join(", ")
            ));
            Some(r)
        }
        Err(e) => {
            tracing::error!(error = %e, "could not open the session recording");
            None
        }
    }
}
