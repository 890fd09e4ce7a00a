//! What every protocol front end offers the gateway: one listener, served until it fails. The
//! gateway starts each configured listener through this trait, whatever its protocol.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

use crate::config::Protocol;

/// Accepting connections until the listener fails.
pub type Serving = Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>;

/// A protocol front end (Postgres, SSH, and those to come).
pub trait ProtocolListener: Send + Sync + 'static {
    /// The protocol it speaks.
    fn protocol(&self) -> Protocol;
    /// What an operator needs to know once it is ready (an SSH host key fingerprint, whether
    /// TLS is offered); empty when nothing.
    fn ready_detail(&self) -> String {
        String::new()
    }
    /// Accept and serve connections on `listener` until it fails.
    fn serve_on(self: Arc<Self>, listener: TcpListener) -> Serving;
}

/// Accept connections on `listener` for ever, handing each to `each` (which spawns its
/// session). A failed accept (out of file descriptors and the like) backs off briefly rather
/// than spin.
pub async fn accept_each(
    listener: TcpListener,
    mut each: impl FnMut(TcpStream, SocketAddr),
) -> std::io::Result<()> {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => each(tcp, peer),
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
