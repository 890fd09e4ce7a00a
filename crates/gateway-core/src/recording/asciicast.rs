//! Terminal recordings in asciicast v2: a JSON header line, then one `[time, code, data]`
//! line per event: `o` output, `i` input, `r` resize (`COLSxROWS`), `m` marker.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Directory under the state directory that holds recordings.
pub const RECORDINGS_DIR: &str = "recordings";

impl super::Recorder for Asciicast {
    fn relative(&self) -> &str {
        &self.relative
    }
    fn output(&mut self, data: &[u8]) {
        Asciicast::output(self, data)
    }
    fn input(&mut self, data: &[u8]) {
        Asciicast::input(self, data)
    }
    fn resize(&mut self, cols: u32, rows: u32) {
        Asciicast::resize(self, cols, rows)
    }
    fn marker(&mut self, text: &str) {
        Asciicast::marker(self, text)
    }
    fn finish(self: Box<Self>) -> bool {
        Asciicast::finish(*self)
    }
}

/// Largest UTF-8 sequence kept back because a chunk ended inside it.
const MAX_CARRY: usize = 3;

/// An open asciicast recording.
pub struct Asciicast {
    out: BufWriter<File>,
    t0: Instant,
    carry_out: Vec<u8>,
    carry_in: Vec<u8>,
    /// Path relative to the state directory, as stored in audit.
    pub relative: String,
    failed: bool,
}

/// What the header says about the terminal.
pub struct Header<'a> {
    pub width: u32,
    pub height: u32,
    pub term: &'a str,
    pub title: &'a str,
}

impl Asciicast {
    /// Create `recordings/<name>.cast` under `state_dir` (mode 0600) and write its header.
    pub fn create(state_dir: &Path, name: &str, header: &Header<'_>) -> std::io::Result<Asciicast> {
        let dir = state_dir.join(RECORDINGS_DIR);
        std::fs::create_dir_all(&dir)?;
        let relative = format!("{RECORDINGS_DIR}/{name}.cast");
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let file = opts.open(state_dir.join(&relative))?;
        let mut out = BufWriter::with_capacity(64 * 1024, file);
        let head = serde_json::json!({
            "version": 2,
            "width": header.width.max(1),
            "height": header.height.max(1),
            "timestamp": crate::util::now_secs(),
            "env": { "TERM": header.term },
            "title": header.title,
        });
        serde_json::to_writer(&mut out, &head)?;
        out.write_all(b"\n")?;
        Ok(Asciicast {
            out,
            t0: Instant::now(),
            carry_out: Vec::new(),
            carry_in: Vec::new(),
            relative,
            failed: false,
        })
    }

    /// Terminal output from the target.
    pub fn output(&mut self, data: &[u8]) {
        let mut carry = std::mem::take(&mut self.carry_out);
        self.text_event("o", &mut carry, data);
        self.carry_out = carry;
    }

    /// Keystrokes from the client.
    pub fn input(&mut self, data: &[u8]) {
        let mut carry = std::mem::take(&mut self.carry_in);
        self.text_event("i", &mut carry, data);
        self.carry_in = carry;
    }

    /// The client's terminal was resized.
    pub fn resize(&mut self, cols: u32, rows: u32) {
        self.event("r", &format!("{cols}x{rows}"));
    }

    /// A marker, e.g. a policy decision.
    pub fn marker(&mut self, text: &str) {
        self.event("m", text);
    }

    /// Flush and close. Returns whether everything was written.
    pub fn finish(mut self) -> bool {
        for code in ["o", "i"] {
            let rest = if code == "o" {
                std::mem::take(&mut self.carry_out)
            } else {
                std::mem::take(&mut self.carry_in)
            };
            if !rest.is_empty() {
                self.event(code, &String::from_utf8_lossy(&rest));
            }
        }
        if self.out.flush().is_err() {
            self.failed = true;
        }
        !self.failed
    }

    /// Whether a write has failed.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Emit the longest complete UTF-8 prefix of `carry ++ data`; keep an incomplete
    /// trailing sequence for the next chunk. Invalid bytes become U+FFFD.
    fn text_event(&mut self, code: &str, carry: &mut Vec<u8>, data: &[u8]) {
        let joined;
        let bytes: &[u8] = if carry.is_empty() {
            data
        } else {
            carry.extend_from_slice(data);
            joined = std::mem::take(carry);
            &joined
        };
        let (text, rest) = split_utf8(bytes);
        if !text.is_empty() {
            self.event(code, &text);
        }
        carry.clear();
        carry.extend_from_slice(rest);
    }

    fn event(&mut self, code: &str, data: &str) {
        if self.failed {
            return;
        }
        let t = self.t0.elapsed().as_secs_f64();
        let r = write!(self.out, "[{t:.6}, \"{code}\", ")
            .and_then(|_| serde_json::to_writer(&mut self.out, data).map_err(std::io::Error::from))
            .and_then(|_| self.out.write_all(b"]\n"));
        if r.is_err() {
            self.failed = true;
        }
    }
}

/// Decode `bytes` as UTF-8 up to an incomplete trailing sequence (returned as the rest).
fn split_utf8(bytes: &[u8]) -> (std::borrow::Cow<'_, str>, &[u8]) {
    let mut end = bytes.len();
    // An incomplete sequence is at most 3 bytes at the very end.
    if let Err(e) = std::str::from_utf8(bytes)
        && e.error_len().is_none()
        && bytes.len() - e.valid_up_to() <= MAX_CARRY
    {
        end = e.valid_up_to();
    }
    let (head, rest) = bytes.split_at(end);
    (String::from_utf8_lossy(head), rest)
}

/// Where a recording with this relative path lives.
pub fn path_in(state_dir: &Path, relative: &str) -> Option<PathBuf> {
    // Only names this module writes: `recordings/<name>.cast`, no traversal.
    let name = relative.strip_prefix("recordings/")?;
    if name.contains('/') || name.contains("..") || !name.ends_with(".cast") {
        return None;
    }
    Some(state_dir.join(RECORDINGS_DIR).join(name))
}

/// One event of a recording, for replay.
#[derive(Debug, Clone, PartialEq)]
pub struct CastEvent {
    pub time: f64,
    pub code: String,
    pub data: String,
}

/// Parse an asciicast v2 file: its header and events. Lines that are not events are skipped.
pub fn parse(text: &str) -> Result<(serde_json::Value, Vec<CastEvent>), String> {
    let mut lines = text.lines();
    let header: serde_json::Value = lines
        .next()
        .ok_or("empty recording")
        .and_then(|l| serde_json::from_str(l).map_err(|_| "bad recording header"))?;
    if header.get("version").and_then(|v| v.as_u64()) != Some(2) {
        return Err("not an asciicast v2 recording".into());
    }
    let mut events = Vec::new();
    for line in lines {
        let Ok(serde_json::Value::Array(a)) = serde_json::from_str::<serde_json::Value>(line)
        else {
            continue;
        };
        if let (Some(t), Some(c), Some(d)) = (
            a.first().and_then(|v| v.as_f64()),
            a.get(1).and_then(|v| v.as_str()),
            a.get(2).and_then(|v| v.as_str()),
        ) {
            events.push(CastEvent {
                time: t,
                code: c.to_string(),
                data: d.to_string(),
            });
        }
    }
    Ok((header, events))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_incomplete_tail() {
        let euro = "€".as_bytes(); // 3 bytes
        let mut b = b"ab".to_vec();
        b.extend_from_slice(&euro[..2]);
        let (t, rest) = split_utf8(&b);
        assert_eq!(t, "ab");
        assert_eq!(rest, &euro[..2]);
        let (t, rest) = split_utf8(b"a\xffb");
        assert_eq!(t, "a\u{fffd}b");
        assert!(rest.is_empty());
    }

    #[test]
    fn round_trip_with_split_characters() {
        let dir = std::env::temp_dir().join(format!("pc-rec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut r = Asciicast::create(
            &dir,
            "s1",
            &Header {
                width: 80,
                height: 24,
                term: "xterm",
                title: "t",
            },
        )
        .unwrap();
        let text = "héllo € \"q\"\r\n";
        let bytes = text.as_bytes();
        for chunk in bytes.chunks(2) {
            r.output(chunk);
        }
        r.input(b"ls\r");
        r.resize(100, 40);
        r.marker("ssh.shell allowed");
        let rel = r.relative.clone();
        assert!(r.finish());
        let path = path_in(&dir, &rel).unwrap();
        let (header, events) = parse(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(header["width"], 80);
        let out: String = events
            .iter()
            .filter(|e| e.code == "o")
            .map(|e| e.data.as_str())
            .collect();
        assert_eq!(out, text);
        assert!(events.iter().any(|e| e.code == "r" && e.data == "100x40"));
        assert!(events.iter().any(|e| e.code == "m"));
        assert!(path_in(&dir, "recordings/../x.cast").is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
