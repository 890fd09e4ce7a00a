//! TLS as TDS 7.x carries it: the handshake's records travel inside PRELOGIN packets, and
//! once it is done every TLS record goes on the wire bare, with the TDS packets inside.
//!
//! [`PreloginFramed`] sits between the TCP stream and the TLS engine (either side): while
//! framing is on it wraps what the engine writes into PRELOGIN packets (as SQL Server does
//! both ways; python-tds insists on it), one PRELOGIN message per handshake flight (what the
//! engine writes before it flushes: tedious reads exactly one message per flight it sends,
//! so a flight cut into several messages stalls it), and strips the packet headers from what it reads
//! (PRELOGIN or tabular result: Microsoft's mock server answers in the latter); [`PreloginFramed::finish_handshake`] turns it into a plain
//! pass-through. It never reads past the end of a packet while framing, so the first bare
//! record after the handshake is never mistaken for a header. A peer that stops framing
//! before the handshake ends (FreeTDS sends its last flight bare) is recognised by a TLS
//! record type where a packet type belongs, and read bare from there on.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// PRELOGIN packet type: what either side writes.
pub const FROM_CLIENT: u8 = 0x12;
/// What the gateway writes as a server: PRELOGIN too.
pub const FROM_SERVER: u8 = 0x12;
/// Tabular result packet type, also read during the handshake.
const TABULAR_RESULT: u8 = 0x04;
/// Header length.
const HEADER: usize = 8;
/// Largest handshake packet written (TLS records are at most ~16 KiB; several packets carry a
/// long flight).
const MAX_OUT_PAYLOAD: usize = 4096 - HEADER;

/// A stream that frames a TLS handshake in PRELOGIN packets until told otherwise.
#[derive(Debug)]
pub struct PreloginFramed<S> {
    inner: S,
    framing: bool,
    /// Reads are framed (until the handshake ends or the peer sends bare records).
    read_framed: bool,
    /// Bytes read as a header that turned out to start a bare TLS record.
    stash: Vec<u8>,
    /// Packet type of what this side writes.
    ty: u8,
    /// The header being read, and how much of it has arrived.
    header: [u8; HEADER],
    header_len: usize,
    /// Payload bytes of the current packet not yet read.
    remaining: usize,
    /// Handshake bytes of the flight being written, not yet framed.
    pending: Vec<u8>,
    /// Framed bytes waiting to be written, and how many are written.
    out: Vec<u8>,
    written: usize,
    /// Packet id of the next packet written.
    packet_id: u8,
}

impl<S> PreloginFramed<S> {
    /// Frame the handshake over `inner`, writing packets of type `ty` ([`FROM_CLIENT`] or
    /// [`FROM_SERVER`]).
    pub fn new(inner: S, ty: u8) -> Self {
        PreloginFramed {
            inner,
            framing: true,
            read_framed: true,
            stash: Vec::new(),
            ty,
            header: [0; HEADER],
            header_len: 0,
            remaining: 0,
            pending: Vec::new(),
            out: Vec::new(),
            written: 0,
            packet_id: 1,
        }
    }

    /// The handshake is over: from now on bytes pass unchanged. Errors if a packet was left
    /// half read or unwritten.
    pub fn finish_handshake(&mut self) -> io::Result<()> {
        if self.header_len != 0
            || self.remaining != 0
            || !self.pending.is_empty()
            || self.written < self.out.len()
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the TLS handshake ended inside a PRELOGIN packet",
            ));
        }
        self.framing = false;
        self.read_framed = false;
        self.out = Vec::new();
        Ok(())
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PreloginFramed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.stash.is_empty() {
            let n = this.stash.len().min(buf.remaining());
            buf.put_slice(&this.stash[..n]);
            this.stash.drain(..n);
            return Poll::Ready(Ok(()));
        }
        if !this.read_framed {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        while this.remaining == 0 {
            // Read the next packet's header, no further.
            let mut hb = ReadBuf::new(&mut this.header[this.header_len..]);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut hb))?;
            let n = hb.filled().len();
            if n == 0 {
                return if this.header_len == 0 {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()))
                };
            }
            this.header_len += n;
            if (0x14..=0x17).contains(&this.header[0]) {
                // A bare TLS record: the peer has stopped framing.
                this.stash = this.header[..this.header_len].to_vec();
                this.header_len = 0;
                this.read_framed = false;
                let n = this.stash.len().min(buf.remaining());
                buf.put_slice(&this.stash[..n]);
                this.stash.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if this.header_len < HEADER {
                continue;
            }
            this.header_len = 0;
            if this.header[0] != FROM_CLIENT && this.header[0] != TABULAR_RESULT {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "expected a PRELOGIN packet carrying the TLS handshake, got packet type {:#04x}",
                        this.header[0]
                    ),
                )));
            }
            let len = usize::from(u16::from_be_bytes([this.header[2], this.header[3]]));
            if len < HEADER {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a PRELOGIN packet of length {len} is shorter than its header"),
                )));
            }
            this.remaining = len - HEADER;
        }
        let want = this.remaining.min(buf.remaining());
        // Handshake bytes only: zeroing the space first keeps this free of unsafe code.
        let space = buf.initialize_unfilled_to(want);
        let mut limited = ReadBuf::new(space);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
        let n = limited.filled().len();
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
        }
        buf.advance(n);
        this.remaining -= n;
        Poll::Ready(Ok(()))
    }
}

impl<S> PreloginFramed<S> {
    /// Frame the flight's pending bytes into PRELOGIN packets: the whole packets it fills,
    /// and with `end` (the engine flushed: the flight is complete) the rest too, the last
    /// packet marked end of message.
    fn frame(&mut self, end: bool) {
        while self.pending.len() > MAX_OUT_PAYLOAD || (end && !self.pending.is_empty()) {
            let take = self.pending.len().min(MAX_OUT_PAYLOAD);
            let status = u8::from(end && take == self.pending.len());
            // At most MAX_OUT_PAYLOAD + HEADER (4096), so it fits.
            let [hi, lo] = u16::try_from(take + HEADER)
                .unwrap_or(u16::MAX)
                .to_be_bytes();
            self.out
                .extend_from_slice(&[self.ty, status, hi, lo, 0, 0, self.packet_id, 0]);
            self.out.extend(self.pending.drain(..take));
            self.packet_id = self.packet_id.wrapping_add(1);
        }
    }
}

impl<S: AsyncWrite + Unpin> PreloginFramed<S> {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.out.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PreloginFramed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.framing {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        // Whole packets framed already go first, so at most one packet's worth waits.
        ready!(this.poll_drain(cx))?;
        let take = data.len().min(MAX_OUT_PAYLOAD);
        this.pending.extend_from_slice(&data[..take]);
        this.frame(false);
        // Written or not, the bytes are taken: flushing (the flight's end) finishes them.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(take))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.framing {
            this.frame(true);
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.framing {
            this.frame(true);
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The packets in `raw`: (status, payload) each.
    fn packets(mut raw: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !raw.is_empty() {
            assert_eq!(raw[0], FROM_SERVER);
            let len = usize::from(u16::from_be_bytes([raw[2], raw[3]]));
            out.push((raw[1], raw[HEADER..len].to_vec()));
            raw = &raw[len..];
        }
        out
    }

    /// A flight the TLS engine writes record by record (a TLS 1.2 server's ChangeCipherSpec,
    /// then its Finished) goes out as one PRELOGIN message when the engine flushes; a flight
    /// longer than a packet spans packets with end-of-message on the last only; after the
    /// handshake bytes pass bare.
    #[tokio::test]
    async fn each_flight_is_one_prelogin_message() {
        let (ours, mut peer) = tokio::io::duplex(64 * 1024);
        let mut framed = PreloginFramed::new(ours, FROM_SERVER);
        let ccs = [0x14, 0x03, 0x03, 0x00, 0x01, 0x01];
        let finished = [0x16u8; 45];
        framed.write_all(&ccs).await.unwrap();
        framed.write_all(&finished).await.unwrap();
        framed.flush().await.unwrap();
        let long = vec![0x16u8; MAX_OUT_PAYLOAD + 100];
        framed.write_all(&long).await.unwrap();
        framed.flush().await.unwrap();
        framed.finish_handshake().unwrap();
        framed.write_all(b"bare").await.unwrap();
        framed.shutdown().await.unwrap();
        drop(framed);
        let mut raw = Vec::new();
        peer.read_to_end(&mut raw).await.unwrap();
        let bare = raw.split_off(raw.len() - 4);
        assert_eq!(bare, b"bare");
        let got = packets(&raw);
        let mut first = ccs.to_vec();
        first.extend_from_slice(&finished);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0], (1, first));
        assert_eq!(
            got[1].0, 0,
            "a packet inside a message has no end-of-message bit"
        );
        assert_eq!(got[1].1.len(), MAX_OUT_PAYLOAD);
        assert_eq!(got[2], (1, vec![0x16; 100]));
    }
}
