//! TLS trust shared by every proxy that reaches a target over TLS.

use std::path::Path;

use rustls::RootCertStore;

/// Trusted roots: the certificates of the PEM file `ca`, or the system's.
pub fn trust_roots(ca: Option<&Path>) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match ca {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                store
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            if store.is_empty() {
                return Err(format!("{}: no PEM certificate in it", path.display()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err("no system root certificates found; set sslrootcert".into());
            }
        }
    }
    Ok(store)
}

/// A certificate chain and private key (PEM files), as a client presents them.
pub type ClientIdentity = (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
);

/// Read a client certificate chain from `cert` and its key from `key` (PEM).
pub fn client_identity(cert: &Path, key: &Path) -> Result<ClientIdentity, String> {
    let pem = std::fs::read(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
    let chain = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no PEM certificate in it", cert.display()));
    }
    let pem = std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let key_der = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| format!("{}: {e}", key.display()))?
        .ok_or_else(|| format!("{}: no PEM private key in it", key.display()))?;
    Ok((chain, key_der))
}
