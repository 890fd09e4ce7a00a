//! The client side of a session up to its LOGIN7: PRELOGIN, TLS (inside PRELOGIN packets, or
//! first as TDS 8.0 strict clients do), then the login with its token.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::codec::login7::Login7;
use crate::codec::messages::ServerMessage;
use crate::codec::packet::{self, MessageReader};
use crate::codec::prelogin::{self, PreLogin};
use crate::codec::write;
use crate::error::{Result, TdsError};
use crate::prelogin_tls::{FROM_SERVER, PreloginFramed};
use crate::server::TdsProxy;
use crate::stream::Stream;
use crate::wire;

/// Longest time from accept to a complete LOGIN7.
pub(crate) const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest PRELOGIN or LOGIN7 accepted before the caller is known.
const MAX_LOGIN_MESSAGE: usize = 128 * 1024;

/// Packet size used before the target's is known (what every client starts with).
pub(crate) const INITIAL_PACKET: usize = 4096;

/// A client that has sent its LOGIN7.
pub(crate) struct ClientLogin {
    pub stream: Stream,
    /// Bytes read past the LOGIN7.
    pub buf: BytesMut,
    pub login: Login7,
}

impl ClientLogin {
    /// The caller's token: the FEDAUTH security token, else the password field (an access
    /// key, or a short token).
    pub fn token(&self) -> Option<&str> {
        self.login
            .token
            .as_deref()
            .or(Some(self.login.password.as_str()).filter(|p| !p.is_empty()))
    }

    /// Whether the token came in the FEDAUTH extension (its acknowledgement is owed).
    pub fn fedauth(&self) -> bool {
        self.login.token.is_some()
    }

    /// The connection the client names: its database, else its server name's first label.
    pub fn connection_name(&self) -> String {
        let db = self.login.database.trim();
        if !db.is_empty() {
            return db.to_string();
        }
        let server = self.login.server_name.trim();
        server
            .split(['.', ',', '\\'])
            .next()
            .unwrap_or(server)
            .to_string()
    }
}

/// Negotiate with a new client up to its LOGIN7.
pub(crate) async fn accept(proxy: &TdsProxy, mut tcp: TcpStream) -> Result<ClientLogin> {
    let mut first = [0u8; 1];
    let n = tcp.peek(&mut first).await.map_err(TdsError::client_io)?;
    if n == 0 {
        return Err(TdsError::Client("closed before PRELOGIN".into()));
    }
    let mut reader = MessageReader::new(packet::MAX_PACKET, MAX_LOGIN_MESSAGE);
    let mut buf = BytesMut::with_capacity(8192);
    let mut stream: Stream =
        if prelogin::first_bytes_kind(&first) == prelogin::FirstBytes::TlsClientHello {
            // TDS 8.0 strict: TLS before any TDS byte, then PRELOGIN inside it.
            let Some(cfg) = &proxy.strict_tls else {
                return Err(TdsError::Client(
                "the client starts with TLS (TDS 8.0 strict), but this listener has no certificate"
                    .into(),
            ));
            };
            let mut tls = TlsAcceptor::from(cfg.clone())
                .accept(tcp)
                .await
                .map_err(TdsError::client_io)?;
            let pre = read_prelogin(&mut tls, &mut buf, &mut reader).await?;
            // Encrypted already; ON, as SQL Server answers strict clients.
            reply_prelogin(&mut tls, &pre, prelogin::ENCRYPT_ON).await?;
            Box::new(tls)
        } else {
            let pre = read_prelogin(&mut tcp, &mut buf, &mut reader).await?;
            let offered = pre.encryption;
            match &proxy.tls {
                None => {
                    reply_prelogin(&mut tcp, &pre, prelogin::ENCRYPT_NOT_SUP).await?;
                    if offered == prelogin::ENCRYPT_REQ {
                        return Err(TdsError::Client(
                            "the client requires encryption, and this listener has no certificate"
                                .into(),
                        ));
                    }
                    Box::new(tcp)
                }
                Some(_) if offered == prelogin::ENCRYPT_NOT_SUP => {
                    if proxy.tls_required {
                        // The token would cross the wire in clear: say encryption is required;
                        // the client gives up.
                        reply_prelogin(&mut tcp, &pre, prelogin::ENCRYPT_REQ).await?;
                        return Err(TdsError::Client(
                            "the client does not support encryption, which this listener requires"
                                .into(),
                        ));
                    }
                    reply_prelogin(&mut tcp, &pre, prelogin::ENCRYPT_NOT_SUP).await?;
                    Box::new(tcp)
                }
                Some(cfg) => {
                    // Everything encrypted, whatever the client offered: never login-only.
                    reply_prelogin(&mut tcp, &pre, prelogin::ENCRYPT_REQ).await?;
                    if !buf.is_empty() {
                        return Err(TdsError::Client(
                            "bytes after PRELOGIN before the TLS handshake".into(),
                        ));
                    }
                    let framed = PreloginFramed::new(tcp, FROM_SERVER);
                    let mut tls = TlsAcceptor::from(cfg.clone())
                        .accept(framed)
                        .await
                        .map_err(TdsError::client_io)?;
                    tls.get_mut()
                        .0
                        .finish_handshake()
                        .map_err(TdsError::client_io)?;
                    Box::new(tls)
                }
            }
        };
    let login = match read_login(&mut stream, &mut buf, &mut reader).await {
        Ok(l) => l,
        Err(e) => {
            // Say why, in the driver's login error, before closing.
            if matches!(e, TdsError::Codec { .. }) {
                refuse_login(&mut stream, &format!("portcullis: login failed: {e}")).await;
            }
            return Err(e);
        }
    };
    Ok(ClientLogin { stream, buf, login })
}

async fn read_prelogin<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
    reader: &mut MessageReader,
) -> Result<PreLogin> {
    let m = wire::read_message(s, buf, reader)
        .await
        .map_err(TdsError::client_io)?
        .ok_or_else(|| TdsError::Client("closed before PRELOGIN".into()))?;
    if m.ty != packet::PRELOGIN {
        return Err(TdsError::Client(format!(
            "expected PRELOGIN, got a message of type {:#04x}",
            m.ty
        )));
    }
    PreLogin::parse(&m.payload).map_err(TdsError::client_codec)
}

/// Answer the client's PRELOGIN: our version, `encryption`, and FEDAUTHREQUIRED echoed so
/// clients that can send a token in LOGIN7 do.
async fn reply_prelogin<S: AsyncWrite + Unpin>(
    s: &mut S,
    client: &PreLogin,
    encryption: u8,
) -> Result<()> {
    let reply = PreLogin {
        version: prelogin::GATEWAY_VERSION,
        encryption,
        fed_auth_required: client.fed_auth_required.map(|_| 1),
        ..PreLogin::default()
    };
    wire::write_message(s, packet::TABULAR_RESULT, &reply.encode(), INITIAL_PACKET)
        .await
        .map_err(TdsError::client_io)
}

async fn read_login(
    s: &mut Stream,
    buf: &mut BytesMut,
    reader: &mut MessageReader,
) -> Result<Login7> {
    let m = wire::read_message(s, buf, reader)
        .await
        .map_err(TdsError::client_io)?
        .ok_or_else(|| TdsError::Client("closed before LOGIN7".into()))?;
    if m.ty != packet::LOGIN7 {
        return Err(TdsError::Client(format!(
            "expected LOGIN7, got a message of type {:#04x}",
            m.ty
        )));
    }
    Login7::parse(&m.payload).map_err(TdsError::client_codec)
}

/// Refuse the login: the error a driver shows (number 18456, as SQL Server's "Login failed"),
/// then the final DONE.
pub(crate) async fn refuse_login(s: &mut Stream, message: &str) {
    let mut payload = BytesMut::with_capacity(256 + message.len() * 2);
    // A gateway message is cut to fit, so this cannot fail.
    let _ = write::write_refusal(
        &mut payload,
        &ServerMessage::from_gateway(18456, 14, message),
    );
    let _ = wire::write_message(s, packet::TABULAR_RESULT, &payload, INITIAL_PACKET).await;
}
