//! The HTTP listener: TLS (ALPN `h2` and `http/1.1`) or plain, HTTP/1.1 and HTTP/2 on each
//! client connection, every request handed to [`crate::handler`].

use std::sync::Arc;
use std::time::Duration;

use gateway_core::services::Services;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};

use crate::dialect::{Dialect, HttpApi};
use crate::held::HeldCredentials;
use crate::session::ClientConn;
use crate::upstream::Targets;

/// Longest a client may take to send a request's head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest TLS handshake.
const TLS_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest HTTP/1 read buffer (bounds a request head).
const MAX_H1_BUF: usize = 64 * 1024;
/// Largest HTTP/2 header list.
const MAX_H2_HEADERS: u32 = 64 * 1024;

/// An HTTP front end for every connection of its dialect's protocol in the config.
pub struct HttpProxy {
    pub(crate) services: Arc<Services>,
    pub(crate) dialect: Arc<dyn Dialect>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    pub(crate) held: HeldCredentials,
    pub(crate) targets: Targets,
}

impl HttpProxy {
    /// A proxy using `services`, with TLS from `tls` (ALPN `h2` and `http/1.1` are set here)
    /// or plain when `None`.
    pub fn new(services: Arc<Services>, tls: Option<Arc<rustls::ServerConfig>>) -> Arc<HttpProxy> {
        HttpProxy::with_dialect(services, tls, Arc::new(HttpApi))
    }

    /// A proxy for the connections of `dialect`'s protocol.
    pub fn with_dialect(
        services: Arc<Services>,
        tls: Option<Arc<rustls::ServerConfig>>,
        dialect: Arc<dyn Dialect>,
    ) -> Arc<HttpProxy> {
        let tls = tls.map(|c| {
            let mut c = (*c).clone();
            c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            tokio_rustls::TlsAcceptor::from(Arc::new(c))
        });
        Arc::new(HttpProxy {
            services,
            dialect,
            tls,
            held: HeldCredentials::default(),
            targets: Targets::default(),
        })
    }

    /// Accept connections until the listener fails.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        gateway_core::listener::accept_each(listener, |tcp, peer| {
            tokio::spawn(self.clone().connection(tcp, peer.to_string()));
        })
        .await
    }

    async fn connection(self: Arc<Self>, tcp: TcpStream, peer: String) {
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some(acceptor) => match tokio::time::timeout(TLS_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => self.serve_http(TokioIo::new(tls), peer).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            },
            None => self.serve_http(TokioIo::new(tcp), peer).await,
        }
    }

    async fn serve_http<I>(self: Arc<Self>, io: I, peer: String)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let client = Arc::new(ClientConn::new(peer));
        let proxy = self.clone();
        let service = service_fn(move |req| {
            let proxy = proxy.clone();
            let client = client.clone();
            async move {
                Ok::<_, std::convert::Infallible>(
                    crate::handler::handle(&proxy, &client, req).await,
                )
            }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(MAX_H1_BUF);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_H2_HEADERS);
        if let Err(e) = builder.serve_connection_with_upgrades(io, service).await {
            tracing::debug!(error = %e, "client connection ended");
        }
    }
}

impl gateway_core::listener::ProtocolListener for HttpProxy {
    fn protocol(&self) -> gateway_core::config::Protocol {
        self.dialect.protocol()
    }

    fn ready_detail(&self) -> String {
        match &self.tls {
            Some(_) => "tls: required (h2, http/1.1)".into(),
            None => "tls: off (plain HTTP/1.1 and h2c)".into(),
        }
    }

    fn serve_on(self: Arc<Self>, listener: TcpListener) -> gateway_core::listener::Serving {
        Box::pin(self.serve(listener))
    }
}
