//! Bodies as they cross the gateway: one boxed type both ways, and a response body that
//! counts what it carried and reports it once, when it ends or is dropped.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt as _;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every request and response the gateway makes.
pub type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// A body of `bytes`, whole.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Any body, boxed.
pub fn boxed<B>(b: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    b.map_err(Into::into).boxed()
}

/// How a body ended, for its command's `command_end`.
#[derive(Debug, Clone, Copy)]
pub struct Carried {
    pub bytes: u64,
    /// The body reached its end (not cut off by an error or the client leaving).
    pub complete: bool,
}

/// A body that calls `done` once with what it carried.
pub struct Counted<F: FnOnce(Carried) + Send + Sync + Unpin + 'static> {
    inner: Body,
    bytes: u64,
    done: Option<F>,
}

impl<F: FnOnce(Carried) + Send + Sync + Unpin + 'static> Counted<F> {
    pub fn new(inner: Body, done: F) -> Counted<F> {
        Counted {
            inner,
            bytes: 0,
            done: Some(done),
        }
    }

    fn finish(&mut self, complete: bool) {
        if let Some(done) = self.done.take() {
            done(Carried {
                bytes: self.bytes,
                complete,
            });
        }
    }
}

impl<F: FnOnce(Carried) + Send + Sync + Unpin + 'static> http_body::Body for Counted<F> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    self.bytes += d.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.finish(true);
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Ready(None) => self.finish(true),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<F: FnOnce(Carried) + Send + Sync + Unpin + 'static> Drop for Counted<F> {
    fn drop(&mut self) {
        let complete = http_body::Body::is_end_stream(&self.inner);
        self.finish(complete);
    }
}

/// Read `body` whole, refusing it past `limit` bytes (nothing past the limit is buffered).
pub async fn collect_bounded<B>(mut body: B, limit: usize) -> Result<Bytes, CollectError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| CollectError::Body(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(CollectError::TooLarge(limit));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Body(String),
}
