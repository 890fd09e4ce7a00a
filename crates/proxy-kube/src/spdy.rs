//! Reading the SPDY/3.1 streams of `kubectl exec` and `attach` as they pass, to record them
//! (kubectl before 1.30 speaks SPDY for both). The client opens one stream per channel and
//! names it in a `streamtype` header (`stdin`, `stdout`, `stderr`, `error`, `resize`); the
//! API server answers on the same streams. Header blocks are one zlib stream per direction,
//! primed with the protocol's fixed dictionary, so every block of a direction is inflated in
//! order. Stream data is handed on as it passes, never buffered; a control frame is kept
//! whole only up to a bound, and so is an inflated header block.

use std::collections::HashMap;

use flate2::{Decompress, FlushDecompress, Status};

use crate::ws::Event;

/// Largest control frame kept to be read (a header block, compressed).
const MAX_CONTROL_FRAME: usize = 16 * 1024;
/// Largest header block once inflated.
const MAX_HEADER_BLOCK: usize = 16 * 1024;
/// Most streams one exec or attach opens (it needs five).
const MAX_STREAMS: usize = 16;
/// Largest status or resize message kept to be read.
const MAX_CONTROL_MESSAGE: usize = 4096;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const HEADERS: u16 = 8;
const FLAG_FIN: u8 = 1;

/// The dictionary SPDY/3 primes header compression with (draft 3, section 2.6.10.1).
pub const DICTIONARY: &[u8; 1423] = b"\
\0\0\0\x07options\0\0\0\x04head\0\0\0\x04post\0\0\0\x03put\0\0\0\x06delete\0\0\0\x05\
trace\0\0\0\x06accept\0\0\0\x0eaccept-charset\0\0\0\x0faccept-encoding\0\0\0\x0facce\
pt-language\0\0\0\x0daccept-ranges\0\0\0\x03age\0\0\0\x05allow\0\0\0\x0dauthorizatio\
n\0\0\0\x0dcache-control\0\0\0\x0aconnection\0\0\0\x0ccontent-base\0\0\0\x10content-\
encoding\0\0\0\x10content-language\0\0\0\x0econtent-length\0\0\0\x10content-location\
\0\0\0\x0bcontent-md5\0\0\0\x0dcontent-range\0\0\0\x0ccontent-type\0\0\0\x04date\0\0\
\0\x04etag\0\0\0\x06expect\0\0\0\x07expires\0\0\0\x04from\0\0\0\x04host\0\0\0\x08if-\
match\0\0\0\x11if-modified-since\0\0\0\x0dif-none-match\0\0\0\x08if-range\0\0\0\x13i\
f-unmodified-since\0\0\0\x0dlast-modified\0\0\0\x08location\0\0\0\x0cmax-forwards\0\
\0\0\x06pragma\0\0\0\x12proxy-authenticate\0\0\0\x13proxy-authorization\0\0\0\x05ran\
ge\0\0\0\x07referer\0\0\0\x0bretry-after\0\0\0\x06server\0\0\0\x02te\0\0\0\x07traile\
r\0\0\0\x11transfer-encoding\0\0\0\x07upgrade\0\0\0\x0auser-agent\0\0\0\x04vary\0\0\
\0\x03via\0\0\0\x07warning\0\0\0\x10www-authenticate\0\0\0\x06method\0\0\0\x03get\0\
\0\0\x06status\0\0\0\x06200 OK\0\0\0\x07version\0\0\0\x08HTTP/1.1\0\0\0\x03url\0\0\0\
\x06public\0\0\0\x0aset-cookie\0\0\0\x0akeep-alive\0\0\0\x06origin100101201202205206\
300302303304305306307402405406407408409410411412413414415416417502504505203 Non-Auth\
oritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthori\
zed403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service \
UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, \
Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,application/x\
ml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,deflat\
e,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

/// One thing a direction of the connection said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A stream was opened (SYN_STREAM), with its `streamtype` header if it had one.
    Open { stream: u32, kind: Option<String> },
    /// Bytes on a stream (a piece of a frame; a frame may come in several).
    Data { stream: u32, data: &'a [u8] },
    /// The sender ended its side of the stream (FIN, or the stream was reset).
    End { stream: u32 },
}

/// What the frame being read is.
#[derive(Debug, Clone, Copy)]
enum Reading {
    /// The 8-byte frame header.
    Head,
    Data {
        stream: u32,
        fin: bool,
    },
    Control {
        kind: u16,
        flags: u8,
    },
}

/// Incremental frame reader for one direction.
pub struct Frames {
    head: [u8; 8],
    have: usize,
    reading: Reading,
    /// Bytes of the current frame's body still to come.
    left: usize,
    control: Vec<u8>,
    inflate: Decompress,
    inflated: Vec<u8>,
}

impl Default for Frames {
    fn default() -> Self {
        Frames {
            head: [0; 8],
            have: 0,
            reading: Reading::Head,
            left: 0,
            control: Vec::new(),
            inflate: Decompress::new(true),
            inflated: Vec::new(),
        }
    }
}

impl Frames {
    /// Feed bytes; `f` sees every frame event they complete, in order. `Err` when the bytes
    /// are not SPDY/3 this reader can follow (the recording could not go on).
    pub fn feed(&mut self, mut input: &[u8], f: &mut dyn FnMut(Frame<'_>)) -> Result<(), String> {
        while !input.is_empty() {
            match self.reading {
                Reading::Head => {
                    let take = (8 - self.have).min(input.len());
                    self.head[self.have..self.have + take].copy_from_slice(&input[..take]);
                    self.have += take;
                    input = &input[take..];
                    if self.have == 8 {
                        self.have = 0;
                        self.start_frame(f)?;
                    }
                }
                body => {
                    let n = self.left.min(input.len());
                    let (chunk, rest) = input.split_at(n);
                    input = rest;
                    match body {
                        Reading::Data { stream, .. } => f(Frame::Data {
                            stream,
                            data: chunk,
                        }),
                        _ => self.control.extend_from_slice(chunk),
                    }
                    self.left -= n;
                    if self.left == 0 {
                        self.end_frame(f)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Read the frame header in `head`.
    fn start_frame(&mut self, f: &mut dyn FnMut(Frame<'_>)) -> Result<(), String> {
        let h = self.head;
        let word = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        let flags = h[4];
        let len = u32::from_be_bytes([0, h[5], h[6], h[7]]) as usize;
        if word & 0x8000_0000 == 0 {
            let stream = word & 0x7fff_ffff;
            let fin = flags & FLAG_FIN != 0;
            self.reading = Reading::Data { stream, fin };
        } else {
            let version = (word >> 16) & 0x7fff;
            if version != 3 {
                return Err(format!("SPDY version {version} is not SPDY/3"));
            }
            if len > MAX_CONTROL_FRAME {
                return Err(format!(
                    "a SPDY control frame of {len} bytes is over the {MAX_CONTROL_FRAME}-byte \
                     limit"
                ));
            }
            self.control.clear();
            self.reading = Reading::Control {
                kind: word as u16,
                flags,
            };
        }
        self.left = len;
        if len == 0 {
            self.end_frame(f)?;
        }
        Ok(())
    }

    /// The frame being read is complete.
    fn end_frame(&mut self, f: &mut dyn FnMut(Frame<'_>)) -> Result<(), String> {
        let reading = std::mem::replace(&mut self.reading, Reading::Head);
        match reading {
            Reading::Head => {}
            Reading::Data { stream, fin, .. } => {
                if fin {
                    f(Frame::End { stream });
                }
            }
            Reading::Control { kind, flags, .. } => {
                let body = std::mem::take(&mut self.control);
                let done = self.control_frame(kind, flags, &body, f);
                self.control = body;
                done?;
            }
        }
        Ok(())
    }

    fn control_frame(
        &mut self,
        kind: u16,
        flags: u8,
        body: &[u8],
        f: &mut dyn FnMut(Frame<'_>),
    ) -> Result<(), String> {
        let stream = |at: usize| -> Result<u32, String> {
            body.get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff)
                .ok_or_else(|| format!("a SPDY control frame (type {kind}) is too short"))
        };
        let (id, block) = match kind {
            SYN_STREAM if body.len() >= 10 => (stream(0)?, &body[10..]),
            SYN_REPLY | HEADERS => (stream(0)?, &body[4.min(body.len())..]),
            SYN_STREAM => return Err("a SPDY SYN_STREAM frame is too short".into()),
            RST_STREAM => {
                f(Frame::End { stream: stream(0)? });
                return Ok(());
            }
            // SETTINGS, PING, GOAWAY, WINDOW_UPDATE: nothing to record.
            _ => return Ok(()),
        };
        // Every block is inflated, so the direction's compression context stays in step, and
        // read whole: a block must hold exactly its pairs, as the peer reads it.
        let headers = self.inflate_block(block)?;
        let stream_kind = stream_type(headers)?;
        if kind == SYN_STREAM {
            f(Frame::Open {
                stream: id,
                kind: stream_kind,
            });
        }
        if flags & FLAG_FIN != 0 {
            f(Frame::End { stream: id });
        }
        Ok(())
    }

    /// Inflate one header block (the sender flushed its compressor after it).
    fn inflate_block(&mut self, mut block: &[u8]) -> Result<&[u8], String> {
        self.inflated.resize(MAX_HEADER_BLOCK, 0);
        let z = &mut self.inflate;
        let mut n = 0;
        while !block.is_empty() {
            let (in0, out0) = (z.total_in(), z.total_out());
            let r = z.decompress(block, &mut self.inflated[n..], FlushDecompress::Sync);
            let used = (z.total_in() - in0) as usize;
            let made = (z.total_out() - out0) as usize;
            block = &block[used..];
            n += made;
            match r {
                Err(e) if e.needs_dictionary().is_some() => {
                    z.set_dictionary(DICTIONARY)
                        .map_err(|e| format!("a SPDY header block's dictionary: {e}"))?;
                    continue;
                }
                Err(e) => return Err(format!("a SPDY header block does not inflate: {e}")),
                Ok(Status::StreamEnd) => {
                    return Err("a SPDY header stream ended, which SPDY never does".into());
                }
                Ok(_) => {}
            }
            if n == self.inflated.len() {
                return Err(format!(
                    "a SPDY header block inflates beyond {MAX_HEADER_BLOCK} bytes"
                ));
            }
            if used == 0 && made == 0 {
                return Err("a SPDY header block does not inflate".into());
            }
        }
        Ok(&self.inflated[..n])
    }
}

/// The `streamtype` header of an inflated header block, which must hold exactly its pairs.
/// A block naming the stream type twice, or with a NUL in it (several values), is refused:
/// the API server reads the first value, and the recording must read what it reads.
fn stream_type(mut raw: &[u8]) -> Result<Option<String>, String> {
    fn take<'a>(raw: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if raw.len() < n {
            return Err("a SPDY header block is cut short".into());
        }
        let (head, rest) = raw.split_at(n);
        *raw = rest;
        Ok(head)
    }
    fn len(raw: &mut &[u8]) -> Result<usize, String> {
        let b = take(raw, 4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    let count = len(&mut raw)?;
    let mut kind = None;
    // Each pair takes at least 8 bytes, so a count the block cannot hold fails early.
    for _ in 0..count {
        let name_len = len(&mut raw)?;
        let name = take(&mut raw, name_len)?;
        let value_len = len(&mut raw)?;
        let value = take(&mut raw, value_len)?;
        if name.eq_ignore_ascii_case(b"streamtype") {
            if kind.is_some() || value.contains(&0) {
                return Err("a SPDY stream names its type more than once".into());
            }
            kind = Some(String::from_utf8_lossy(value).into_owned());
        }
    }
    if !raw.is_empty() {
        return Err("a SPDY header block holds more than its pairs".into());
    }
    Ok(kind)
}

/// The channels of one exec or attach over SPDY, read from both directions as the WebSocket
/// channel protocol numbers them: 0 stdin, 1 stdout, 2 stderr, 3 status, 4 resize.
#[derive(Default)]
pub struct Channels {
    from_client: Frames,
    from_target: Frames,
    channels: HashMap<u32, u8>,
    /// The highest stream id the client opened: ids only grow (the server refuses a lower
    /// or repeated one, so the recording must not take it either).
    last_opened: u32,
    /// Client streams the client has ended: later data on them is not run, so not recorded.
    client_ended: Vec<u32>,
    status: Vec<u8>,
    resize: Vec<u8>,
}

impl Channels {
    /// Bytes the client sent; `f` sees stdin data and each resize message.
    pub fn client(&mut self, data: &[u8], f: &mut dyn FnMut(Event<'_>)) -> Result<(), String> {
        let Channels {
            from_client,
            channels,
            last_opened,
            client_ended,
            resize,
            ..
        } = self;
        let mut broken: Option<String> = None;
        from_client.feed(data, &mut |frame| {
            if broken.is_some() {
                return;
            }
            match frame {
                Frame::Open { stream, kind } => {
                    if stream <= *last_opened {
                        broken = Some(format!("SPDY stream {stream} opened out of order"));
                        return;
                    }
                    if channels.len() == MAX_STREAMS {
                        broken = Some(format!("more than {MAX_STREAMS} SPDY streams in one exec"));
                        return;
                    }
                    *last_opened = stream;
                    let channel = match kind.as_deref() {
                        Some("stdin") => 0,
                        Some("stdout") => 1,
                        Some("stderr") => 2,
                        Some("error") => 3,
                        Some("resize") => 4,
                        _ => u8::MAX,
                    };
                    channels.insert(stream, channel);
                }
                Frame::Data { stream, .. } if client_ended.contains(&stream) => {}
                Frame::Data { stream, data } => match channels.get(&stream) {
                    Some(0) => f(Event::Data { channel: 0, data }),
                    Some(4) => {
                        // Resize messages are JSON objects, one per line.
                        for piece in data.split_inclusive(|b| *b == b'\n') {
                            if resize.len() + piece.len() > MAX_CONTROL_MESSAGE {
                                broken = Some("a resize message is too long".into());
                                return;
                            }
                            resize.extend_from_slice(piece);
                            if piece.ends_with(b"\n") {
                                f(Event::Control {
                                    channel: 4,
                                    message: std::mem::take(resize),
                                });
                            }
                        }
                    }
                    _ => {}
                },
                Frame::End { stream } => {
                    if client_ended.len() < MAX_STREAMS && !client_ended.contains(&stream) {
                        client_ended.push(stream);
                    }
                }
            }
        })?;
        broken.map_or(Ok(()), Err)
    }

    /// Bytes the target sent; `f` sees stdout and stderr data and the final status.
    pub fn target(&mut self, data: &[u8], f: &mut dyn FnMut(Event<'_>)) -> Result<(), String> {
        let Channels {
            from_target,
            channels,
            status,
            ..
        } = self;
        let mut broken = false;
        from_target.feed(data, &mut |frame| match frame {
            Frame::Data { stream, data } => match channels.get(&stream) {
                Some(&channel @ (1 | 2)) => f(Event::Data { channel, data }),
                Some(3) if status.len() + data.len() > MAX_CONTROL_MESSAGE => broken = true,
                Some(3) => status.extend_from_slice(data),
                _ => {}
            },
            Frame::End { stream } if channels.get(&stream) == Some(&3) && !status.is_empty() => {
                f(Event::Control {
                    channel: 3,
                    message: std::mem::take(status),
                });
            }
            _ => {}
        })?;
        if broken {
            return Err(format!(
                "the exec's status is longer than {MAX_CONTROL_MESSAGE} bytes"
            ));
        }
        Ok(())
    }

    /// A status the target sent but never ended (the connection closed first).
    pub fn unfinished_status(&mut self) -> Option<Vec<u8>> {
        (!self.status.is_empty()).then(|| std::mem::take(&mut self.status))
    }
}

#[cfg(test)]
#[path = "spdy_tests.rs"]
mod tests;
