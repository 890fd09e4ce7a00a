//! Reading the WebSocket streams of `kubectl exec`/`attach` as they pass, to record them:
//! RFC 6455 frames (client frames masked), each message's first byte naming its channel
//! (0 stdin, 1 stdout, 2 stderr, 3 status, 4 resize; `v5.channel.k8s.io` adds 255, close
//! a channel). Payloads are not buffered beyond the small control messages (resize, status),
//! and a control message too long to keep ends the reading (the recording could not say what
//! it held).

/// Largest resize or status message kept to be read.
const MAX_CONTROL: usize = 4096;

/// One event read from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// Data on `channel` (a piece of a message; a message may come in several).
    Data { channel: u8, data: &'a [u8] },
    /// A complete small message on channel 3 (status) or 4 (resize).
    Control { channel: u8, message: Vec<u8> },
}

/// Incremental frame reader for one direction.
#[derive(Debug, Default)]
pub struct Frames {
    /// The header being read (at most 14 bytes).
    head: Vec<u8>,
    in_payload: bool,
    /// Payload bytes left in the current frame.
    left: u64,
    mask: Option<[u8; 4]>,
    /// Offset into the mask for the next payload byte.
    mask_at: usize,
    /// The frame carries data (binary, text or continuation), not a control frame.
    data_frame: bool,
    /// The current message's channel, once its first byte was read.
    channel: Option<u8>,
    /// FIN of the current frame.
    fin: bool,
    control: Vec<u8>,
    scratch: Vec<u8>,
    /// A control message outgrew [`MAX_CONTROL`].
    overlong: bool,
}

impl Frames {
    /// Feed bytes; `f` sees every event they complete, in order. `Err` once a status or
    /// resize message is longer than can be kept.
    pub fn feed(&mut self, mut input: &[u8], f: &mut dyn FnMut(Event<'_>)) -> Result<(), String> {
        while !input.is_empty() {
            if !self.in_payload {
                let need = self.head_len();
                let take = (need - self.head.len()).min(input.len());
                self.head.extend_from_slice(&input[..take]);
                input = &input[take..];
                if self.head.len() < self.head_len() {
                    continue;
                }
                self.left = self.parse_head();
                self.head.clear();
                self.in_payload = true;
                if self.left == 0 {
                    self.end_frame(f);
                }
                continue;
            }
            let n = (input.len() as u64).min(self.left) as usize;
            let (chunk, rest) = input.split_at(n);
            input = rest;
            self.payload(chunk, f);
            self.left -= n as u64;
            if self.left == 0 {
                self.end_frame(f);
            }
        }
        if self.overlong {
            return Err(format!(
                "an exec status or resize message is longer than {MAX_CONTROL} bytes"
            ));
        }
        Ok(())
    }

    /// The size of the frame header being read, as far as its first two bytes tell.
    fn head_len(&self) -> usize {
        let Some(&b1) = self.head.get(1) else {
            return 2;
        };
        let ext = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
    }

    /// Read the complete header in `head`; the payload's length.
    fn parse_head(&mut self) -> u64 {
        let h = &self.head;
        let opcode = h[0] & 0x0f;
        self.fin = h[0] & 0x80 != 0;
        let (len, used) = match h[1] & 0x7f {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(&h[2..10]);
                (u64::from_be_bytes(a), 10)
            }
            n => (u64::from(n), 2),
        };
        self.mask = (h[1] & 0x80 != 0).then(|| [h[used], h[used + 1], h[used + 2], h[used + 3]]);
        self.mask_at = 0;
        self.data_frame = opcode <= 2;
        if opcode != 0 && self.data_frame {
            // A new message starts: its first byte names the channel.
            self.channel = None;
            self.control.clear();
        }
        len
    }

    fn payload(&mut self, chunk: &[u8], f: &mut dyn FnMut(Event<'_>)) {
        if !self.data_frame || chunk.is_empty() {
            return;
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(chunk);
        if let Some(k) = self.mask {
            for b in self.scratch.iter_mut() {
                *b ^= k[self.mask_at & 3];
                self.mask_at += 1;
            }
        }
        let mut data = &self.scratch[..];
        let channel = match self.channel {
            Some(c) => c,
            None => {
                let c = data[0];
                data = &data[1..];
                self.channel = Some(c);
                c
            }
        };
        if matches!(channel, 3 | 4) {
            if self.control.len() + data.len() <= MAX_CONTROL {
                self.control.extend_from_slice(data);
            } else {
                self.overlong = true;
            }
        } else if !data.is_empty() {
            f(Event::Data { channel, data });
        }
    }

    fn end_frame(&mut self, f: &mut dyn FnMut(Event<'_>)) {
        self.in_payload = false;
        if self.data_frame
            && self.fin
            && let Some(channel @ (3 | 4)) = self.channel
        {
            f(Event::Control {
                channel,
                message: std::mem::take(&mut self.control),
            });
        }
    }
}

#[cfg(test)]
#[path = "ws_tests.rs"]
mod tests;
