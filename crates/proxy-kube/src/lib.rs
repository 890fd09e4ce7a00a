//! The Kubernetes API gateway: kubectl and client libraries reach an API server through
//! Portcullis with their own token. Each request is decided by policy on its verb,
//! resource, namespace and name (as the API server itself reads them), held for approval
//! when a rule says so, and recorded; the API server is reached with the credential the
//! gateway holds, optionally impersonating the caller; Secret values are masked; exec and
//! attach sessions are recorded. Built on the HTTP front of `proxy-http`.
#![forbid(unsafe_code)]

use std::sync::Arc;

use gateway_core::services::Services;
use proxy_http::HttpProxy;

pub mod check;
pub mod dialect;
pub mod info;
pub mod kubeconfig;
mod record;
pub mod secrets;
pub mod spdy;
pub mod status;
pub mod ws;

/// A front for every `kube` connection in the config, with TLS from `tls` (or plain).
pub fn proxy(services: Arc<Services>, tls: Option<Arc<rustls::ServerConfig>>) -> Arc<HttpProxy> {
    HttpProxy::with_dialect(services, tls, Arc::new(dialect::KubeApi))
}
