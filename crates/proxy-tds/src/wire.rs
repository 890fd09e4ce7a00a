//! Whole messages on a stream: read until a message's last packet arrives, write a payload
//! as packets. Used for the handshake and login, and for requests the gateway answers itself.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::codec::packet::{self, Message, MessageReader};

/// Read the next whole message from `s`, buffering in `buf`; `Ok(None)` when the peer closed
/// between messages.
pub(crate) async fn read_message<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
    reader: &mut MessageReader,
) -> std::io::Result<Option<Message>> {
    loop {
        match reader.next(buf) {
            Ok(Some(m)) => return Ok(Some(m)),
            Ok(None) => {}
            Err(e) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    e.to_string(),
                ));
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(8192);
        }
        if s.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
    }
}

/// Write `payload` as a message of type `ty` in packets of `packet_size`.
pub(crate) async fn write_message<S: AsyncWrite + Unpin>(
    s: &mut S,
    ty: u8,
    payload: &[u8],
    packet_size: usize,
) -> std::io::Result<()> {
    let mut out = BytesMut::with_capacity(payload.len() + 64);
    packet::put_message(&mut out, ty, payload, packet_size, 0);
    s.write_all(&out).await?;
    s.flush().await
}
