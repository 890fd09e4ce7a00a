//! A response body masked line by line as it streams: a watch's events (one JSON document a
//! line) or a followed log. Each complete line is masked and sent as soon as it arrives;
//! nothing waits for the body's end. A line longer than the limit ends the body with an
//! error rather than being passed unmasked.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use gateway_core::masking::{MaskCounts, SessionMasks, TypeHint};
use http_body::{Frame, SizeHint};

use crate::body::{Body, BoxError};
use crate::dialect::Dialect;

/// A body whose lines are masked on the way.
pub struct MaskedLines {
    inner: Body,
    buf: BytesMut,
    limit: usize,
    hint: TypeHint,
    masks: Arc<SessionMasks>,
    dialect: Arc<dyn Dialect>,
    counts: Arc<Mutex<MaskCounts>>,
    done: bool,
}

impl MaskedLines {
    /// Mask `inner`'s lines (each at most `limit` bytes) of type `hint`, counting into
    /// `counts`.
    pub fn new(
        inner: Body,
        hint: TypeHint,
        limit: usize,
        masks: Arc<SessionMasks>,
        dialect: Arc<dyn Dialect>,
        counts: Arc<Mutex<MaskCounts>>,
    ) -> MaskedLines {
        MaskedLines {
            inner,
            buf: BytesMut::new(),
            limit,
            hint,
            masks,
            dialect,
            counts,
            done: false,
        }
    }

    /// Mask every complete line in the buffer (all of it when `last`); `None` when there is
    /// none yet. Only the `fresh` bytes just added are searched for the last line end: the
    /// rest held none, so a long line arriving in small pieces is not rescanned.
    fn drain(&mut self, last: bool, fresh: usize) -> Result<Option<Bytes>, BoxError> {
        let end = if last {
            self.buf.len()
        } else {
            let from = self.buf.len() - fresh.min(self.buf.len());
            match memchr::memrchr(b'\n', &self.buf[from..]) {
                Some(i) => from + i + 1,
                None if self.buf.len() > self.limit => {
                    return Err(format!(
                        "a streamed line is longer than {} bytes and cannot be masked",
                        self.limit
                    )
                    .into());
                }
                None => return Ok(None),
            }
        };
        if end == 0 {
            return Ok(None);
        }
        let chunk = self.buf.split_to(end).freeze();
        if let Some(long) = chunk.split(|&b| b == b'\n').find(|l| l.len() > self.limit) {
            return Err(format!(
                "a streamed line of {} bytes is longer than {} and cannot be masked",
                long.len(),
                self.limit
            )
            .into());
        }
        let mut out = BytesMut::with_capacity(chunk.len() + 64);
        let mut counts = self.counts.lock().map_err(|_| "mask counts unavailable")?;
        for line in chunk.split_inclusive(|&b| b == b'\n') {
            let body = line.strip_suffix(b"\n").unwrap_or(line);
            if body.iter().all(u8::is_ascii_whitespace) {
                out.extend_from_slice(line);
                continue;
            }
            let masked = crate::mask::mask_body(
                &self.masks,
                self.hint,
                Bytes::copy_from_slice(body),
                &mut counts,
                Some(&*self.dialect),
            )?;
            out.extend_from_slice(masked.strip_suffix(b"\n").unwrap_or(&masked));
            if line.ends_with(b"\n") {
                out.extend_from_slice(b"\n");
            }
        }
        Ok(Some(out.freeze()))
    }
}

impl http_body::Body for MaskedLines {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        // Trailers are not forwarded.
                        continue;
                    };
                    self.buf.extend_from_slice(&data);
                    match self.drain(false, data.len()) {
                        Ok(Some(b)) => return Poll::Ready(Some(Ok(Frame::data(b)))),
                        Ok(None) => continue,
                        Err(e) => {
                            self.done = true;
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                }
                Poll::Ready(None) => {
                    self.done = true;
                    return match self.drain(true, 0) {
                        Ok(Some(b)) => Poll::Ready(Some(Ok(Frame::data(b)))),
                        Ok(None) => Poll::Ready(None),
                        Err(e) => Poll::Ready(Some(Err(e))),
                    };
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
