//! TLS from the gateway to the target, as a connection's `sslmode` says: an SSLRequest, then
//! a rustls handshake whose certificate check follows libpq's modes (`require`: none,
//! `verify-ca`: the chain, `verify-full`: the chain and the host name).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::BytesMut;
use gateway_core::config::{ConnectionConfig, SslMode};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::codec;
use crate::error::{PgError, Result};
use crate::stream::TargetStream;

/// How to reach one connection's target over TLS.
#[derive(Clone)]
pub(crate) struct TargetTls {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl std::fmt::Debug for TargetTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetTls")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Client configurations by mode and CA file.
type ConfigCache = HashMap<(SslMode, Option<PathBuf>), Arc<ClientConfig>>;

/// The TLS settings for `conn`'s target, `None` with `sslmode = disable`. CA files are read,
/// and the system's roots loaded, once per process and mode.
pub(crate) fn for_connection(conn: &ConnectionConfig, base: &Path) -> Result<Option<TargetTls>> {
    let mode = conn.sslmode();
    if mode == SslMode::Disable {
        return Ok(None);
    }
    let host = conn
        .target
        .rsplit_once(':')
        .map_or(conn.target.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = ServerName::try_from(host.to_string()).map_err(|e| {
        PgError::Gateway(format!(
            "target {}: not a TLS server name: {e}",
            conn.target
        ))
    })?;
    let ca = conn.sslrootcert.as_ref().map(|f| base.join(f));
    static CONFIGS: OnceLock<Mutex<ConfigCache>> = OnceLock::new();
    let cache = CONFIGS.get_or_init(Mutex::default);
    let key = (mode, ca.clone());
    if let Some(config) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(Some(TargetTls {
            config: config.clone(),
            name,
        }));
    }
    let config = Arc::new(build(mode, ca.as_deref())?);
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, config.clone());
    Ok(Some(TargetTls { config, name }))
}

fn build(mode: SslMode, ca: Option<&Path>) -> Result<ClientConfig> {
    let bad = |e: String| PgError::Gateway(format!("TLS to the target: {e}"));
    let builder = ClientConfig::builder();
    let config = match mode {
        SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
            .with_no_client_auth(),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = Arc::new(gateway_core::tls::trust_roots(ca).map_err(bad)?);
            let webpki = WebPkiServerVerifier::builder(roots)
                .build()
                .map_err(|e| bad(e.to_string()))?;
            if mode == SslMode::VerifyFull {
                builder.with_webpki_verifier(webpki).with_no_client_auth()
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
                    .with_no_client_auth()
            }
        }
        SslMode::Disable => return Err(bad("sslmode is disable".into())),
    };
    Ok(config)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// `sslmode = require`: encrypted, the certificate not checked (as libpq does). Handshake
/// signatures are still verified, so the session key belongs to whoever holds the key of the
/// certificate presented.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode = verify-ca`: the chain must verify; the name it is for does not matter.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Ask `tcp`'s server for TLS and complete the handshake, or fail: a target that declines is
/// never used in the clear when TLS was asked for.
pub(crate) async fn start(mut tcp: TcpStream, tls: &TargetTls) -> Result<TargetStream> {
    let mut req = BytesMut::with_capacity(8);
    codec::put_ssl_request(&mut req);
    tcp.write_all(&req).await.map_err(PgError::target_io)?;
    let answer = tcp.read_u8().await.map_err(PgError::target_io)?;
    if answer != b'S' {
        return Err(PgError::Target(
            "target does not accept TLS, and the connection's sslmode requires it".into(),
        ));
    }
    let stream = TlsConnector::from(tls.config.clone())
        .connect(tls.name.clone(), tcp)
        .await
        .map_err(|e| PgError::Target(format!("TLS handshake with the target failed: {e}")))?;
    Ok(TargetStream::Tls(Box::new(stream)))
}
