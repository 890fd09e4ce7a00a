//! TDS packets: the 8-byte header, messages reassembled from packets, payloads written as
//! packets.
//!
//! A header is type, status, big-endian length (header included), SPID, packet id and window.
//! A message ends with the packet whose status has EOM. Lengths are checked against the
//! negotiated packet size before anything is buffered, and messages against a bound of their
//! own.

use bytes::{Buf, Bytes, BytesMut};

use super::{CodecError, Result};

pub const HEADER_LEN: usize = 8;
/// Largest packet TDS allows.
pub const MAX_PACKET: usize = 32767;
/// Smallest packet size a client may ask for.
pub const MIN_PACKET: usize = 512;

/// Status: the last packet of its message.
pub const STATUS_EOM: u8 = 0x01;
/// Status: the client asks the server to ignore this message (with EOM).
pub const STATUS_IGNORE: u8 = 0x02;
/// Status: reset the connection before this request.
pub const STATUS_RESET: u8 = 0x08;
/// Status: reset the connection, keeping its transaction.
pub const STATUS_RESET_SKIP_TRAN: u8 = 0x10;

pub const SQL_BATCH: u8 = 0x01;
pub const RPC: u8 = 0x03;
pub const TABULAR_RESULT: u8 = 0x04;
pub const ATTENTION: u8 = 0x06;
pub const BULK_LOAD: u8 = 0x07;
pub const FEDAUTH_TOKEN: u8 = 0x08;
pub const TRANS_MGR: u8 = 0x0E;
pub const LOGIN7: u8 = 0x10;
pub const SSPI: u8 = 0x11;
pub const PRELOGIN: u8 = 0x12;

/// One whole message: its type, the status of its first and last packets, and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub ty: u8,
    /// The first packet's status (where the reset flags are).
    pub status: u8,
    /// The last packet's status (EOM, and IGNORE for a message the client gave up on).
    pub last_status: u8,
    pub payload: Bytes,
}

impl Message {
    /// The client cancelled this message before its end: the server ignores it, so the
    /// gateway neither decides nor forwards it.
    pub fn is_ignored(&self) -> bool {
        self.last_status & STATUS_IGNORE != 0
    }

    /// The client asks for the connection to be reset before this request (what a driver's
    /// connection pool does on reuse); the target then drops its prepared handles.
    pub fn resets_connection(&self) -> bool {
        self.status & (STATUS_RESET | STATUS_RESET_SKIP_TRAN) != 0
    }
}

/// The length of the whole packet at the start of `buf`, once all of it is there; an error
/// for a length no packet can have.
pub fn whole_packet_len(buf: &[u8]) -> Result<Option<usize>> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if len < HEADER_LEN {
        return Err(CodecError::Invalid(format!(
            "a packet of length {len} is shorter than its header"
        )));
    }
    Ok((buf.len() >= len).then_some(len))
}

/// Reassembles messages from packets.
#[derive(Debug)]
pub struct MessageReader {
    max_packet: usize,
    max_message: usize,
    /// The message being assembled: type, first status, payload so far.
    partial: Option<(u8, u8, BytesMut)>,
}

impl MessageReader {
    /// Packets up to `max_packet` bytes (at most [`MAX_PACKET`]), messages up to
    /// `max_message` bytes of payload.
    pub fn new(max_packet: usize, max_message: usize) -> MessageReader {
        MessageReader {
            max_packet: max_packet.clamp(MIN_PACKET, MAX_PACKET),
            max_message,
            partial: None,
        }
    }

    /// The next whole message from `buf`, consuming its packets; `None` until its last packet
    /// is there. An Attention packet ends any message being assembled (the client gave up on
    /// it) and is returned on its own.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Message>> {
        loop {
            if buf.len() < HEADER_LEN {
                return Ok(None);
            }
            let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
            if len < HEADER_LEN {
                return Err(CodecError::Invalid(format!(
                    "a packet of length {len} is shorter than its header"
                )));
            }
            if len > self.max_packet {
                return Err(CodecError::TooLong {
                    what: "packet",
                    len,
                    max: self.max_packet,
                });
            }
            if buf.len() < len {
                return Ok(None);
            }
            let ty = buf[0];
            let status = buf[1];
            let mut packet = buf.split_to(len);
            packet.advance(HEADER_LEN);
            if ty == ATTENTION {
                self.partial = None;
                return Ok(Some(Message {
                    ty,
                    status,
                    last_status: status,
                    payload: packet.freeze(),
                }));
            }
            let eom = status & STATUS_EOM != 0;
            let so_far = self.partial.as_ref().map_or(0, |(_, _, p)| p.len());
            let total = so_far.saturating_add(packet.len());
            if total > self.max_message {
                return Err(CodecError::TooLong {
                    what: "message",
                    len: total,
                    max: self.max_message,
                });
            }
            match &mut self.partial {
                Some((pty, _, payload)) => {
                    if *pty != ty {
                        return Err(CodecError::Invalid(format!(
                            "a packet of type {ty:#04x} inside a message of type {pty:#04x}"
                        )));
                    }
                    payload.extend_from_slice(&packet);
                }
                // One packet, one message: no copy.
                None if eom => {
                    return Ok(Some(Message {
                        ty,
                        status,
                        last_status: status,
                        payload: packet.freeze(),
                    }));
                }
                None => self.partial = Some((ty, status, packet)),
            }
            if eom && let Some((ty, first, payload)) = self.partial.take() {
                return Ok(Some(Message {
                    ty,
                    status: first,
                    last_status: status,
                    payload: payload.freeze(),
                }));
            }
        }
    }
}

/// Write `payload` as a message of type `ty`, in packets of at most `packet_size` bytes; the
/// first packet carries `status` (reset flags), the last EOM unless `more` follows.
pub fn put_message(out: &mut BytesMut, ty: u8, payload: &[u8], packet_size: usize, status: u8) {
    put_message_part(out, ty, payload, packet_size, status, true);
}

/// As [`put_message`]; `last` false leaves the message open (no EOM): more of it follows.
pub fn put_message_part(
    out: &mut BytesMut,
    ty: u8,
    payload: &[u8],
    packet_size: usize,
    status: u8,
    last: bool,
) {
    let room = packet_size.clamp(MIN_PACKET, MAX_PACKET) - HEADER_LEN;
    let mut chunks = payload.chunks(room).peekable();
    let mut id: u8 = 1;
    let mut first = true;
    if payload.is_empty() {
        put_header(out, ty, status | if last { STATUS_EOM } else { 0 }, 0, id);
        return;
    }
    while let Some(chunk) = chunks.next() {
        let end = chunks.peek().is_none() && last;
        let st = (if first { status } else { 0 }) | if end { STATUS_EOM } else { 0 };
        put_header(out, ty, st, chunk.len(), id);
        out.extend_from_slice(chunk);
        id = id.wrapping_add(1);
        first = false;
    }
}

/// One packet of `payload` (at most a packet's room) with the given SPID and packet id.
pub fn put_packet(out: &mut BytesMut, ty: u8, status: u8, spid: [u8; 2], id: u8, payload: &[u8]) {
    let len = u16::try_from(payload.len() + HEADER_LEN).unwrap_or(u16::MAX);
    let [hi, lo] = len.to_be_bytes();
    out.extend_from_slice(&[ty, status, hi, lo, spid[0], spid[1], id, 0]);
    out.extend_from_slice(payload);
}

fn put_header(out: &mut BytesMut, ty: u8, status: u8, payload_len: usize, id: u8) {
    // Chunks are at most MAX_PACKET - HEADER_LEN, so the length fits in 16 bits.
    let len = u16::try_from(payload_len + HEADER_LEN).unwrap_or(u16::MAX);
    let [hi, lo] = len.to_be_bytes();
    out.extend_from_slice(&[ty, status, hi, lo, 0, 0, id, 0]);
}

#[cfg(test)]
#[path = "packet_tests.rs"]
mod tests;
