//! The credential the gateway holds for each TDS connection: a SQL login read from its
//! environment variable or file, or an access token obtained with the connection's OAuth
//! client credentials (one token source per connection, shared by its sessions, so a token
//! is fetched once and reused until shortly before it expires).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use gateway_core::config::{ConnectionConfig, OAuthClientConfig};
use gateway_core::oauth::TokenSource;

use crate::target::Credential;

/// Token sources by connection name, with the settings each was made from.
#[derive(Default)]
pub(crate) struct HeldCredentials {
    sources: Mutex<HashMap<String, (OAuthClientConfig, Arc<TokenSource>)>>,
}

/// A credential ready for one target login.
pub(crate) enum Held {
    Sql { user: String, password: String },
    Token(Arc<str>),
}

impl Held {
    pub fn credential(&self) -> Credential<'_> {
        match self {
            Held::Sql { user, password } => Credential::Sql { user, password },
            Held::Token(t) => Credential::Token(t),
        }
    }
}

impl HeldCredentials {
    /// The credential for `conn`: its SQL login, or a current access token.
    pub async fn resolve(&self, conn: &ConnectionConfig, base: &Path) -> Result<Held, String> {
        let Some(oauth) = &conn.oauth else {
            let password = conn
                .password(base)
                .map_err(|e| e.to_string())?
                .ok_or("the connection has no password")?;
            return Ok(Held::Sql {
                user: conn.user.clone().unwrap_or_default(),
                password,
            });
        };
        let source = self.source(&conn.name, oauth, base)?;
        source.token().await.map(Held::Token)
    }

    /// The token source for connection `name`, made anew when its settings changed.
    fn source(
        &self,
        name: &str,
        oauth: &OAuthClientConfig,
        base: &Path,
    ) -> Result<Arc<TokenSource>, String> {
        let mut sources = self
            .sources
            .lock()
            .map_err(|_| "the token sources are unavailable".to_string())?;
        if let Some((cfg, source)) = sources.get(name)
            && cfg == oauth
        {
            return Ok(source.clone());
        }
        let source = Arc::new(TokenSource::new(oauth, base)?);
        sources.insert(name.to_string(), (oauth.clone(), source.clone()));
        Ok(source)
    }
}
