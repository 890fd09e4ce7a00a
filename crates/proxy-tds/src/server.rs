//! The TDS listener: accepts connections and runs one session task each.

use std::sync::Arc;

use gateway_core::services::Services;
use tokio::net::TcpListener;

use crate::held::HeldCredentials;
use crate::session;

/// A TDS front end for every `tds` connection in the config.
pub struct TdsProxy {
    pub(crate) services: Arc<Services>,
    /// The listener's certificate: offered in PRELOGIN, and TDS 8.0 strict TLS.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// The same with the TDS 8.0 ALPN id, for clients that start with TLS.
    pub(crate) strict_tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) tls_required: bool,
    /// Credentials held for targets (token sources shared by sessions).
    pub(crate) held: HeldCredentials,
}

impl TdsProxy {
    /// A proxy using `services`, offering TLS inside PRELOGIN with `prelogin_tls` and to
    /// TDS 8.0 strict clients with `strict_tls` (and insisting on it when `tls_required`).
    pub fn new(
        services: Arc<Services>,
        prelogin_tls: Option<Arc<rustls::ServerConfig>>,
        strict_tls: Option<Arc<rustls::ServerConfig>>,
        tls_required: bool,
    ) -> Arc<TdsProxy> {
        // No TLS 1.3 session tickets: a server sends them just after the handshake, while
        // the handshake may still be framed in PRELOGIN packets. Drivers do not resume TDS
        // sessions anyway.
        let tls = prelogin_tls.map(|c| {
            let mut c = (*c).clone();
            c.send_tls13_tickets = 0;
            Arc::new(c)
        });
        let strict_tls = strict_tls.map(|c| {
            let mut strict = (*c).clone();
            strict.alpn_protocols = vec![crate::target_tls::TDS8_ALPN.to_vec()];
            Arc::new(strict)
        });
        Arc::new(TdsProxy {
            services,
            tls,
            strict_tls,
            tls_required,
            held: HeldCredentials::default(),
        })
    }

    /// Accept connections until the listener fails.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        gateway_core::listener::accept_each(listener, |tcp, peer| {
            tokio::spawn(session::handle(self.clone(), tcp, peer));
        })
        .await
    }
}

impl gateway_core::listener::ProtocolListener for TdsProxy {
    fn protocol(&self) -> gateway_core::config::Protocol {
        gateway_core::config::Protocol::Tds
    }

    fn ready_detail(&self) -> String {
        match (&self.tls, self.tls_required) {
            (None, _) => "tls: off".into(),
            (Some(_), false) => "tls: offered (PRELOGIN and TDS 8.0 strict)".into(),
            (Some(_), true) => "tls: required (PRELOGIN and TDS 8.0 strict)".into(),
        }
    }

    fn serve_on(self: Arc<Self>, listener: TcpListener) -> gateway_core::listener::Serving {
        Box::pin(self.serve(listener))
    }
}
