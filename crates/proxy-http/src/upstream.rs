//! The gateway's side towards targets: one pooled HTTP/1.1 client per connection (TLS with
//! the connection's CA or the system's roots, or plain to loopback), made on first use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway_core::config::{Config, ConnectionConfig, HttpScheme};
use hyper::header::HeaderValue;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::body::Body;

/// Idle pooled connections to a target are closed after this.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// How to reach one connection's target.
pub(crate) struct Target {
    pub client: Client<HttpsConnector<HttpConnector>, Body>,
    /// `https://host:port` or `http://host:port`.
    pub base: String,
    /// The `Host` header sent.
    pub host: HeaderValue,
    /// The host name as policy sees it (`context.host`).
    pub host_name: String,
}

/// Targets by connection name.
#[derive(Default)]
pub(crate) struct Targets {
    targets: Mutex<HashMap<String, Arc<Target>>>,
}

impl Targets {
    pub fn get(&self, cfg: &Config, conn: &ConnectionConfig) -> Result<Arc<Target>, String> {
        let mut targets = self
            .targets
            .lock()
            .map_err(|_| "the target clients are unavailable".to_string())?;
        if let Some(t) = targets.get(&conn.name) {
            return Ok(t.clone());
        }
        let t = Arc::new(make(cfg, conn)?);
        targets.insert(conn.name.clone(), t.clone());
        Ok(t)
    }
}

fn make(cfg: &Config, conn: &ConnectionConfig) -> Result<Target, String> {
    let mut settings = conn.http.clone().unwrap_or_default();
    let mut client_cert = None;
    if let Some(k) = &conn.kube {
        // An API server is always reached over TLS.
        settings.scheme = HttpScheme::Https;
        settings.host = k.server_name.clone();
        if let (Some(c), Some(key)) = (&k.client_cert, &k.client_key) {
            client_cert = Some(gateway_core::tls::client_identity(
                &cfg.resolve(c),
                &cfg.resolve(key),
            )?);
        }
    }
    let target_host = crate::route::host_name(&conn.target);
    let host_name = settings.host.clone().unwrap_or(target_host);
    let roots = gateway_core::tls::trust_roots(
        conn.sslrootcert.as_ref().map(|p| cfg.resolve(p)).as_deref(),
    )
    .or_else(|e| match settings.scheme {
        // A plain target needs no roots.
        HttpScheme::Http => Ok(rustls::RootCertStore::empty()),
        HttpScheme::Https => Err(e),
    })?;
    let tls = rustls::ClientConfig::builder().with_root_certificates(roots);
    let tls = match client_cert {
        Some((chain, key)) => tls
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("the client certificate: {e}"))?,
        None => tls.with_no_client_auth(),
    };
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
    let builder = match settings.scheme {
        HttpScheme::Https => builder.https_only(),
        HttpScheme::Http => builder.https_or_http(),
    };
    let builder = if settings.host.is_some() {
        let name = rustls::pki_types::ServerName::try_from(host_name.clone())
            .map_err(|_| format!("`{host_name}` is not a server name"))?;
        builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
    } else {
        builder
    };
    let connector = builder.enable_http1().build();
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .build(connector);
    let scheme = match settings.scheme {
        HttpScheme::Https => "https",
        HttpScheme::Http => "http",
    };
    let host_header = settings.host.clone().unwrap_or_else(|| conn.target.clone());
    let host = HeaderValue::from_str(&host_header)
        .map_err(|_| format!("`{host_header}` is not a valid Host"))?;
    Ok(Target {
        client,
        base: format!("{scheme}://{}", conn.target),
        host,
        host_name,
    })
}
