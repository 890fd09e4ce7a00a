//! TLS from the gateway to a TDS target: the certificate verified against the connection's
//! CA file (or the system's roots) for the target's host name, as `Encrypt=Mandatory` and
//! `Encrypt=Strict` do in Microsoft's drivers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use gateway_core::config::{ConnectionConfig, TdsEncrypt};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;

use crate::error::{Result, TdsError};

/// ALPN protocol id of TDS 8.0.
pub(crate) const TDS8_ALPN: &[u8] = b"tds/8.0";

/// How to reach one connection's target over TLS.
#[derive(Clone)]
pub(crate) struct TargetTls {
    pub config: Arc<ClientConfig>,
    pub name: ServerName<'static>,
}

/// Client configurations by strictness and CA file.
type ConfigCache = HashMap<(bool, Option<PathBuf>), Arc<ClientConfig>>;

/// The TLS settings for `conn`'s target; `None` with `encrypt = "off"`. CA files are read
/// once per process.
pub(crate) fn for_connection(conn: &ConnectionConfig, base: &Path) -> Result<Option<TargetTls>> {
    let strict = match conn.encrypt.unwrap_or_default() {
        TdsEncrypt::Off => return Ok(None),
        TdsEncrypt::Mandatory => false,
        TdsEncrypt::Strict => true,
    };
    let host = conn
        .target
        .rsplit_once(':')
        .map_or(conn.target.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = ServerName::try_from(host.to_string()).map_err(|e| {
        TdsError::Gateway(format!(
            "target {}: not a TLS server name: {e}",
            conn.target
        ))
    })?;
    let ca = conn.sslrootcert.as_ref().map(|f| base.join(f));
    static CONFIGS: OnceLock<Mutex<ConfigCache>> = OnceLock::new();
    let cache = CONFIGS.get_or_init(Mutex::default);
    let key = (strict, ca.clone());
    if let Some(config) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(Some(TargetTls {
            config: config.clone(),
            name,
        }));
    }
    let roots = gateway_core::tls::trust_roots(ca.as_deref())
        .map_err(|e| TdsError::Gateway(format!("TLS to the target: {e}")))?;
    let mut config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    if strict {
        config.alpn_protocols = vec![TDS8_ALPN.to_vec()];
    }
    let config = Arc::new(config);
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, config.clone());
    Ok(Some(TargetTls { config, name }))
}
