//! The recording of one `kubectl exec` or `attach`: its channels read as they pass, from
//! WebSocket frames ([`crate::ws`]) or SPDY streams ([`crate::spdy`]), and written as
//! asciicast v2 — stdout and stderr as output, stdin as input, resize messages as resizes,
//! the final status as a marker — plus the exit code the status names, for the command's end
//! event.

use gateway_core::recording::{Asciicast, Header};
use proxy_http::dialect::{Tap, UpgradeContext};

use crate::spdy::Channels;
use crate::ws::{Event, Frames};

/// How the channels travel.
enum Wire {
    WebSocket {
        from_client: Frames,
        from_target: Frames,
    },
    Spdy(Box<Channels>),
}

/// Records an exec/attach session.
pub struct ExecTap {
    cast: Option<Asciicast>,
    wire: Wire,
    exit_code: Option<i64>,
    status: Option<String>,
}

impl ExecTap {
    /// Open the recording for command number `ctx.number` of session `ctx.session_id`;
    /// `title` says what ran. The channels are read as SPDY streams when the target switched
    /// to SPDY, else as WebSocket messages. `Err` when it cannot be created.
    pub fn open(ctx: &UpgradeContext<'_>, title: &str, marker: &str) -> Result<ExecTap, String> {
        let name = format!("{}-{}", ctx.session_id, ctx.number);
        let header = Header {
            width: 80,
            height: 24,
            term: "xterm",
            title,
        };
        let mut cast = Asciicast::create(ctx.state_dir, &name, &header).map_err(|e| {
            tracing::error!(error = %e, "could not open the exec recording");
            e.to_string()
        })?;
        cast.marker(marker);
        let cast = Some(cast);
        let wire = if ctx.upgrade.to_ascii_lowercase().starts_with("spdy/") {
            Wire::Spdy(Box::default())
        } else {
            Wire::WebSocket {
                from_client: Frames::default(),
                from_target: Frames::default(),
            }
        };
        Ok(ExecTap {
            cast,
            wire,
            exit_code: None,
            status: None,
        })
    }
}

impl Tap for ExecTap {
    fn client(&mut self, data: &[u8]) -> Result<(), String> {
        let cast = &mut self.cast;
        let mut on = |e: Event<'_>| match e {
            Event::Data { channel: 0, data } => {
                if let Some(c) = cast.as_mut() {
                    c.input(data);
                }
            }
            Event::Control {
                channel: 4,
                message,
            } => {
                let size: serde_json::Value = serde_json::from_slice(&message).unwrap_or_default();
                let w = size["Width"].as_u64().unwrap_or(0) as u32;
                let h = size["Height"].as_u64().unwrap_or(0) as u32;
                if let (Some(c), true) = (cast.as_mut(), w > 0 && h > 0) {
                    c.resize(w, h);
                }
            }
            _ => {}
        };
        match &mut self.wire {
            Wire::WebSocket { from_client, .. } => from_client.feed(data, &mut on),
            Wire::Spdy(ch) => ch.client(data, &mut on),
        }
    }

    fn target(&mut self, data: &[u8]) -> Result<(), String> {
        let cast = &mut self.cast;
        let (code, status) = (&mut self.exit_code, &mut self.status);
        let mut on = |e: Event<'_>| match e {
            Event::Data {
                channel: 1 | 2,
                data,
            } => {
                if let Some(c) = cast.as_mut() {
                    c.output(data);
                }
            }
            Event::Control {
                channel: 3,
                message,
            } => read_status(cast, code, status, &message),
            _ => {}
        };
        match &mut self.wire {
            Wire::WebSocket { from_target, .. } => from_target.feed(data, &mut on),
            Wire::Spdy(ch) => ch.target(data, &mut on),
        }
    }

    fn finish(mut self: Box<Self>) -> serde_json::Value {
        if let Wire::Spdy(ch) = &mut self.wire
            && let Some(message) = ch.unfinished_status()
        {
            read_status(
                &mut self.cast,
                &mut self.exit_code,
                &mut self.status,
                &message,
            );
        }
        let mut detail = serde_json::json!({});
        if let Some(c) = self.cast {
            let rel = c.relative.clone();
            if !c.finish() {
                tracing::warn!(recording = %rel, "the exec recording could not be written completely");
            }
            detail["recording"] = rel.into();
        }
        if let Some(code) = self.exit_code {
            detail["exit_status"] = code.into();
        }
        if let Some(s) = self.status {
            detail["exec_status"] = s.into();
        }
        detail
    }
}

/// The exec's final status (a `Status` object, or before v4 the error's text): its exit code
/// for the end event, and a marker in the recording.
fn read_status(
    cast: &mut Option<Asciicast>,
    code: &mut Option<i64>,
    status: &mut Option<String>,
    message: &[u8],
) {
    let s: serde_json::Value = serde_json::from_slice(message).unwrap_or_default();
    *status = s["status"].as_str().map(str::to_string);
    *code = match s["status"].as_str() {
        Some("Success") => Some(0),
        _ => s["details"]["causes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["reason"] == "ExitCode")
            .and_then(|c| c["message"].as_str())
            .and_then(|m| m.parse().ok()),
    };
    if let Some(c) = cast.as_mut() {
        c.marker(&format!(
            "status {}",
            String::from_utf8_lossy(message).trim()
        ));
    }
}
