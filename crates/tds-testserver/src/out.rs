//! A response on its way to the client: tokens are appended whole, cut into packets of the
//! negotiated size as they accumulate, and written while the rest is still being produced.

use bytes::BytesMut;
use proxy_tds::codec::packet::{self, HEADER_LEN, STATUS_EOM};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Packets written at once when this much is ready (a few packets of the largest size).
const HIGH_WATER: usize = 64 * 1024;

/// The writing half of a client connection, with the response being built.
pub struct Out<W> {
    w: W,
    packet_size: usize,
    /// Token bytes not yet cut into packets: always whole tokens at its end.
    tokens: BytesMut,
    /// Packets ready to write.
    wire: BytesMut,
    /// Packet id of the next packet of this message.
    packet_id: u8,
    spid: [u8; 2],
    /// Packets written since the server started, and the largest one (for tests).
    stats: Stats,
}

/// What went out, counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub packets: u64,
    pub largest: usize,
}

impl<W: AsyncWrite + Unpin> Out<W> {
    pub fn new(w: W, packet_size: usize, spid: u16) -> Self {
        Out {
            w,
            packet_size: packet_size.clamp(packet::MIN_PACKET, packet::MAX_PACKET),
            tokens: BytesMut::with_capacity(packet::MAX_PACKET * 2),
            wire: BytesMut::with_capacity(HIGH_WATER + packet::MAX_PACKET),
            packet_id: 1,
            spid: spid.to_be_bytes(),
            stats: Stats::default(),
        }
    }

    /// Packets of this size from now on (after login).
    pub fn set_packet_size(&mut self, size: usize) {
        self.packet_size = size.clamp(packet::MIN_PACKET, packet::MAX_PACKET);
    }

    pub fn packet_size(&self) -> usize {
        self.packet_size
    }

    /// Where the next tokens are written. Append whole tokens only.
    pub fn tokens(&mut self) -> &mut BytesMut {
        &mut self.tokens
    }

    /// Token bytes of this message not yet cut into packets.
    pub fn pending(&self) -> usize {
        self.tokens.len()
    }

    /// Drop token bytes past `len` (a row that could not be finished).
    pub fn truncate_tokens(&mut self, len: usize) {
        self.tokens.truncate(len);
    }

    fn room(&self) -> usize {
        self.packet_size - HEADER_LEN
    }

    fn put_packet(&mut self, len: usize, last: bool) {
        let chunk = self.tokens.split_to(len);
        let status = if last { STATUS_EOM } else { 0 };
        packet::put_packet(
            &mut self.wire,
            packet::TABULAR_RESULT,
            status,
            self.spid,
            self.packet_id,
            &chunk,
        );
        self.packet_id = self.packet_id.wrapping_add(1);
        self.stats.packets += 1;
        self.stats.largest = self.stats.largest.max(len + HEADER_LEN);
    }

    /// Cut every full packet's worth of tokens, keeping at least one byte back so the
    /// message's last packet is never empty.
    fn cut_full(&mut self) {
        let room = self.room();
        while self.tokens.len() > room {
            self.put_packet(room, false);
        }
    }

    /// Cut full packets, and write them if enough are ready.
    pub async fn progress(&mut self) -> std::io::Result<()> {
        self.cut_full();
        if self.wire.len() >= HIGH_WATER {
            self.write_wire().await?;
        }
        Ok(())
    }

    /// Cut and write every full packet now (the producer is about to wait).
    pub async fn flush_ready(&mut self) -> std::io::Result<()> {
        self.cut_full();
        if !self.wire.is_empty() {
            self.write_wire().await?;
            self.w.flush().await?;
        }
        Ok(())
    }

    /// End the message: the rest of the tokens in packets, the last one with EOM, all written.
    pub async fn end_message(&mut self) -> std::io::Result<()> {
        self.cut_full();
        let rest = self.tokens.len();
        self.put_packet(rest, true);
        self.packet_id = 1;
        self.write_wire().await?;
        self.w.flush().await
    }

    async fn write_wire(&mut self) -> std::io::Result<()> {
        self.w.write_all(&self.wire).await?;
        self.wire.clear();
        Ok(())
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proxy_tds::codec::packet::MessageReader;

    #[tokio::test]
    async fn messages_are_cut_into_packets_no_larger_than_negotiated() {
        let mut out = Out::new(Vec::new(), 512, 7);
        let payload: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        out.tokens().extend_from_slice(&payload[..3000]);
        out.progress().await.unwrap();
        out.flush_ready().await.unwrap();
        out.tokens().extend_from_slice(&payload[3000..]);
        out.end_message().await.unwrap();
        // A message of exactly a packet's room ends in one packet, not an empty one after it.
        out.tokens().extend_from_slice(&payload[..504]);
        out.end_message().await.unwrap();
        let wire = out.w.clone();
        let mut at = 0;
        let mut ids = Vec::new();
        while at < wire.len() {
            let len = usize::from(u16::from_be_bytes([wire[at + 2], wire[at + 3]]));
            assert!(len <= 512 && len > HEADER_LEN);
            assert_eq!(&wire[at + 4..at + 6], &[0, 7], "SPID");
            ids.push((wire[at + 6], wire[at + 1] & STATUS_EOM != 0));
            at += len;
        }
        assert_eq!(ids.len(), 5000usize.div_ceil(504) + 1);
        assert_eq!(ids[0], (1, false));
        assert_eq!(ids[9], (10, true));
        assert_eq!(ids[10], (1, true));
        let mut reader = MessageReader::new(512, 1 << 20);
        let mut buf = BytesMut::from(&wire[..]);
        let m = reader.next(&mut buf).unwrap().unwrap();
        assert_eq!(&m.payload[..], &payload[..]);
        let m = reader.next(&mut buf).unwrap().unwrap();
        assert_eq!(&m.payload[..], &payload[..504]);
        assert_eq!(out.stats().largest, 512);
    }
}
