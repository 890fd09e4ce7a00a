//! The Postgres listener: accepts connections and runs one session task each.

use std::sync::Arc;

use gateway_core::services::Services;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::cancel::CancelMap;
use crate::codec::DEFAULT_MAX_MESSAGE;
use crate::session;

/// A Postgres front end for every `postgres` connection in the config.
pub struct PgProxy {
    pub(crate) services: Arc<Services>,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) tls_required: bool,
    pub(crate) cancels: Arc<CancelMap>,
    pub(crate) max_message: usize,
    /// Catalog facts per target, for deciding calls.
    pub(crate) facts: crate::relay::facts::FactsRegistry,
}

impl PgProxy {
    /// A proxy using `services`, offering TLS when `tls` is given (and insisting on it when
    /// `tls_required`).
    pub fn new(
        services: Arc<Services>,
        tls: Option<Arc<rustls::ServerConfig>>,
        tls_required: bool,
    ) -> Arc<PgProxy> {
        Arc::new(PgProxy {
            services,
            tls: tls.map(TlsAcceptor::from),
            tls_required,
            cancels: Arc::new(CancelMap::default()),
            max_message: DEFAULT_MAX_MESSAGE,
            facts: Default::default(),
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

impl gateway_core::listener::ProtocolListener for PgProxy {
    fn protocol(&self) -> gateway_core::config::Protocol {
        gateway_core::config::Protocol::Postgres
    }

    fn ready_detail(&self) -> String {
        match (&self.tls, self.tls_required) {
            (None, _) => "tls: off".into(),
            (Some(_), false) => "tls: offered".into(),
            (Some(_), true) => "tls: required".into(),
        }
    }

    fn serve_on(self: Arc<Self>, listener: TcpListener) -> gateway_core::listener::Serving {
        Box::pin(self.serve(listener))
    }
}
