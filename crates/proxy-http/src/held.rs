//! The credential the gateway holds for each HTTP connection and adds to every request it
//! forwards: a static header read once from its environment variable or file, a bearer token
//! file read again when it changes (a Kubernetes service account's projected token is
//! rotated in place), an OAuth 2.0 client-credentials access token (`Authorization: Bearer
//! …`) from a token source shared by every request of the connection (fetched once,
//! refreshed before it expires), or an Azure Storage account key that signs each request
//! (Shared Key).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use gateway_core::config::{Config, ConnectionConfig};
use gateway_core::oauth::TokenSource;
use hyper::HeaderMap;
use hyper::header::{AUTHORIZATION, HeaderName, HeaderValue};

use crate::sharedkey::SharedKey;

/// What a connection holds.
enum Holder {
    Nothing,
    Header(HeaderName, HeaderValue),
    TokenFile(TokenFile),
    OAuth(Arc<TokenSource>),
    SharedKey(Box<SharedKey>),
}

/// Held credentials by connection name, made on first use.
#[derive(Default)]
pub(crate) struct HeldCredentials {
    holders: Mutex<HashMap<String, Arc<Holder>>>,
}

impl HeldCredentials {
    /// Put the credential `conn` holds on a request to its target: `headers` are the
    /// request's as they will be sent, `path` its encoded path, `query` its query.
    pub async fn apply(
        &self,
        cfg: &Config,
        conn: &ConnectionConfig,
        method: &str,
        headers: &mut HeaderMap,
        path: &str,
        query: Option<&str>,
    ) -> Result<(), String> {
        let holder = self.holder(cfg, conn)?;
        match &*holder {
            Holder::Nothing => {}
            Holder::Header(n, v) => {
                headers.insert(n.clone(), v.clone());
            }
            Holder::TokenFile(file) => {
                headers.insert(AUTHORIZATION, file.current());
            }
            Holder::OAuth(source) => {
                let token = source.token().await?;
                let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| "the token endpoint returned a token unfit for a header")?;
                v.set_sensitive(true);
                headers.insert(AUTHORIZATION, v);
            }
            Holder::SharedKey(k) => {
                let now = gateway_core::timefmt::http_date(gateway_core::util::now_secs());
                k.sign(method, headers, path, query, &now)?;
            }
        }
        Ok(())
    }

    fn holder(&self, cfg: &Config, conn: &ConnectionConfig) -> Result<Arc<Holder>, String> {
        let mut holders = self
            .holders
            .lock()
            .map_err(|_| "the held credentials are unavailable".to_string())?;
        if let Some(h) = holders.get(&conn.name) {
            return Ok(h.clone());
        }
        let header = conn.http.as_ref().and_then(|h| h.header.as_ref());
        let shared = conn.http.as_ref().and_then(|h| h.shared_key.as_ref());
        let token_file = conn.kube.as_ref().and_then(|k| k.token_file.as_ref());
        let kube_token = match &conn.kube {
            Some(k) if token_file.is_none() => k.token(&cfg.base_dir)?,
            _ => None,
        };
        let holder = match (&conn.oauth, header) {
            _ if token_file.is_some() => {
                let path = cfg.base_dir.join(token_file.ok_or("no token file")?);
                Holder::TokenFile(TokenFile::open(path)?)
            }
            _ if kube_token.is_some() => {
                Holder::Header(AUTHORIZATION, bearer(&kube_token.unwrap_or_default())?)
            }
            _ if shared.is_some() => {
                let k = shared.ok_or("no shared key")?;
                Holder::SharedKey(Box::new(SharedKey::new(
                    &k.account,
                    &k.key(&cfg.base_dir)?,
                )?))
            }
            (Some(oauth), _) => Holder::OAuth(Arc::new(TokenSource::new(oauth, &cfg.base_dir)?)),
            (None, Some(h)) => {
                let name = HeaderName::from_bytes(h.name.as_bytes())
                    .map_err(|_| format!("`{}` is not a header name", h.name))?;
                let mut value = HeaderValue::from_str(&h.value(&cfg.base_dir)?)
                    .map_err(|_| "the held header value is not a valid header value")?;
                value.set_sensitive(true);
                Holder::Header(name, value)
            }
            (None, None) => Holder::Nothing,
        };
        let holder = Arc::new(holder);
        holders.insert(conn.name.clone(), holder.clone());
        Ok(holder)
    }
}

/// How often a token file is looked at for a change.
const TOKEN_FILE_CHECK: Duration = Duration::from_secs(1);

/// A bearer token file, looked at (its modification time and length) at most once a second
/// and read again when either changed. Looked at before it is read, so a change that lands
/// in between is read at the next look. A file that cannot be read keeps the last token
/// (the API server refuses it once it expires), with a warning. The look is a `stat` on the
/// request's thread, once a second at most.
struct TokenFile {
    path: PathBuf,
    state: Mutex<TokenState>,
}

struct TokenState {
    value: HeaderValue,
    seen: Option<(SystemTime, u64)>,
    checked: Instant,
}

/// What says a file changed: its modification time and length.
fn looked_at(path: &std::path::Path) -> std::io::Result<(SystemTime, u64)> {
    let m = std::fs::metadata(path)?;
    Ok((m.modified()?, m.len()))
}

impl TokenFile {
    fn open(path: PathBuf) -> Result<TokenFile, String> {
        let seen = looked_at(&path).ok();
        let value = read_token(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(TokenFile {
            state: Mutex::new(TokenState {
                value,
                seen,
                checked: Instant::now(),
            }),
            path,
        })
    }

    /// The `Authorization` value to send now.
    fn current(&self) -> HeaderValue {
        let mut st = match self.state.lock() {
            Ok(st) => st,
            Err(poisoned) => poisoned.into_inner(),
        };
        if st.checked.elapsed() >= TOKEN_FILE_CHECK {
            st.checked = Instant::now();
            match looked_at(&self.path) {
                Ok(now) if Some(now) != st.seen => match read_token(&self.path) {
                    Ok(v) => {
                        st.value = v;
                        st.seen = Some(now);
                        tracing::info!(file = %self.path.display(), "the held token file changed; using the new token");
                    }
                    Err(e) => {
                        tracing::warn!(file = %self.path.display(), error = %e, "the held token file changed but cannot be read; keeping the last token")
                    }
                },
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(file = %self.path.display(), error = %e, "the held token file cannot be read; keeping the last token")
                }
            }
        }
        st.value.clone()
    }
}

/// `Bearer <the file's token>`.
fn read_token(path: &std::path::Path) -> Result<HeaderValue, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let token = text.trim();
    if token.is_empty() {
        return Err("the file is empty".into());
    }
    bearer(token)
}

/// `Bearer <token>`, marked sensitive.
fn bearer(token: &str) -> Result<HeaderValue, String> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| "the held token is not a valid header value")?;
    value.set_sensitive(true);
    Ok(value)
}
