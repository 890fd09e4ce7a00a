//! The gateway's side of a session towards the target: PRELOGIN, TLS as the connection's
//! `encrypt` says (certificate verified), LOGIN7 with the credential the gateway holds, and
//! the target's login response. A routing answer (Azure SQL's gateway redirecting to the
//! database's node) is followed here; the client never sees it.

use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use gateway_core::config::{ConnectionConfig, TdsEncrypt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::codec::login7::Login7;
use crate::codec::messages::EnvChange;
use crate::codec::packet::{self, MessageReader};
use crate::codec::prelogin::{self, PreLogin};
use crate::codec::tokens::{self, StreamState, Token};
use crate::error::{Result, TdsError};
use crate::prelogin_tls::{FROM_CLIENT, PreloginFramed};
use crate::stream::Stream;
use crate::target_tls::{self, TargetTls};
use crate::wire;

/// Longest wait for the target's TCP connection, handshake and login.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Redirections followed at most.
const MAX_ROUTES: usize = 3;

/// Largest login response taken from a target.
const MAX_LOGIN_RESPONSE: usize = 1 << 20;

/// A target the gateway is logged in to.
pub(crate) struct Target {
    pub stream: Stream,
    /// Packet size in force on the target's side (its ENVCHANGE, else what was asked).
    pub packet_size: usize,
    /// The target's login response tokens, less its final DONE, FEATUREEXTACK and database
    /// change: forwarded to the client as the gateway's own.
    pub login_tokens: BytesMut,
    /// Bytes read past the login response.
    pub buf: BytesMut,
}

/// What the gateway's LOGIN7 carries from the client's, and the credential it logs in with.
pub(crate) struct LoginFrom<'a> {
    pub client: &'a Login7,
    pub credential: Credential<'a>,
}

/// The credential the gateway holds for a target.
pub(crate) enum Credential<'a> {
    /// A SQL login.
    Sql { user: &'a str, password: &'a str },
    /// An access token (OAuth 2.0 client credentials), sent as a FEDAUTH security token.
    Token(&'a str),
}

/// Connect and log in to `conn`'s target.
pub(crate) async fn connect(
    conn: &ConnectionConfig,
    base: &Path,
    from: &LoginFrom<'_>,
) -> Result<Target> {
    let tls = target_tls::for_connection(conn, base)?;
    let strict = conn.encrypt.unwrap_or_default() == TdsEncrypt::Strict;
    let mut address = conn.target.clone();
    let mut server_name = None::<String>;
    for _ in 0..=MAX_ROUTES {
        let attempt = tokio::time::timeout(
            CONNECT_TIMEOUT,
            login(
                &address,
                tls.as_ref(),
                strict,
                conn,
                from,
                server_name.as_deref(),
            ),
        )
        .await
        .map_err(|_| {
            TdsError::Target(format!("{address}: no answer within {CONNECT_TIMEOUT:?}"))
        })??;
        match attempt {
            Attempt::Done(t) => return Ok(t),
            Attempt::Routed { host, port } => {
                tracing::info!(from = %address, to = %format!("{host}:{port}"), "target routed the login");
                address = format!("{host}:{port}");
                server_name = Some(host);
            }
        }
    }
    Err(TdsError::Target(format!(
        "the target redirected the login more than {MAX_ROUTES} times"
    )))
}

enum Attempt {
    Done(Target),
    Routed { host: String, port: u16 },
}

async fn login(
    address: &str,
    tls: Option<&TargetTls>,
    strict: bool,
    conn: &ConnectionConfig,
    from: &LoginFrom<'_>,
    routed_name: Option<&str>,
) -> Result<Attempt> {
    let tcp = TcpStream::connect(address)
        .await
        .map_err(|e| TdsError::Target(format!("{address}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let mut reader = MessageReader::new(packet::MAX_PACKET, MAX_LOGIN_RESPONSE);
    let mut buf = BytesMut::with_capacity(8192);
    let fedauth = matches!(from.credential, Credential::Token(_));
    let mut stream: Stream;
    let answer: PreLogin;
    match tls {
        Some(t) if strict => {
            let mut s = TlsConnector::from(t.config.clone())
                .connect(t.name.clone(), tcp)
                .await
                .map_err(|e| TdsError::Target(format!("{address}: TLS: {e}")))?;
            answer =
                prelogin_exchange(&mut s, &mut buf, &mut reader, prelogin::ENCRYPT_ON, fedauth)
                    .await?;
            stream = Box::new(s);
        }
        Some(t) => {
            let mut tcp = tcp;
            answer = prelogin_exchange(
                &mut tcp,
                &mut buf,
                &mut reader,
                prelogin::ENCRYPT_ON,
                fedauth,
            )
            .await?;
            if answer.encryption == prelogin::ENCRYPT_NOT_SUP {
                return Err(TdsError::Target(format!(
                    "{address} does not support encryption (set encrypt = \"off\" only for a loopback target)"
                )));
            }
            let framed = PreloginFramed::new(tcp, FROM_CLIENT);
            let mut s = TlsConnector::from(t.config.clone())
                .connect(t.name.clone(), framed)
                .await
                .map_err(|e| TdsError::Target(format!("{address}: TLS: {e}")))?;
            s.get_mut()
                .0
                .finish_handshake()
                .map_err(TdsError::target_io)?;
            stream = Box::new(s);
        }
        None => {
            let mut tcp = tcp;
            answer = prelogin_exchange(
                &mut tcp,
                &mut buf,
                &mut reader,
                prelogin::ENCRYPT_NOT_SUP,
                fedauth,
            )
            .await?;
            if answer.encryption == prelogin::ENCRYPT_REQ {
                return Err(TdsError::Target(format!(
                    "{address} requires encryption; set encrypt = \"mandatory\""
                )));
            }
            stream = Box::new(tcp);
        }
    }
    let packet_size = (from.client.packet_size as usize).clamp(512, packet::MAX_PACKET);
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    let (user, password) = match from.credential {
        Credential::Sql { user, password } => (user, password),
        Credential::Token(_) => ("", ""),
    };
    let ours = Login7 {
        packet_size: packet_size as u32,
        user_name: user.to_string(),
        password: password.to_string(),
        server_name: routed_name.unwrap_or(host).to_string(),
        database: conn.database.clone().unwrap_or_default(),
        library: "Portcullis".to_string(),
        token: None,
        features: Vec::new(),
        sspi: false,
        ..from.client.clone()
    };
    let payload = match from.credential {
        Credential::Sql { .. } => ours.encode(),
        Credential::Token(token) => ours.encode_with_token(
            token,
            answer.fed_auth_required == Some(1),
            answer.nonce.as_ref(),
        ),
    }
    .map_err(|e| TdsError::Gateway(format!("building the target login: {e}")))?;
    wire::write_message(
        &mut stream,
        packet::LOGIN7,
        &payload,
        crate::front::INITIAL_PACKET,
    )
    .await
    .map_err(TdsError::target_io)?;
    let m = wire::read_message(&mut stream, &mut buf, &mut reader)
        .await
        .map_err(TdsError::target_io)?
        .ok_or_else(|| TdsError::Target("the target closed the connection at login".into()))?;
    let mut at = 0;
    let mut kept = BytesMut::with_capacity(m.payload.len());
    let mut logged_in = false;
    let mut size = packet_size;
    let body = &m.payload[..];
    let mut state = StreamState::new();
    while at < body.len() {
        let Some((token, used)) =
            tokens::next_token(&body[at..], &mut state).map_err(TdsError::target_codec)?
        else {
            return Err(TdsError::Target(
                "the target's login response is cut short".into(),
            ));
        };
        let raw = &body[at..at + used];
        at += used;
        match token {
            Token::Error(e) => {
                return Err(TdsError::Target(format!(
                    "the target refused the gateway's login (error {}): {}",
                    e.number, e.message
                )));
            }
            Token::EnvChange(
                EnvChange::Routing { server, port, .. }
                | EnvChange::EnhancedRouting { server, port, .. },
            ) => {
                return Ok(Attempt::Routed { host: server, port });
            }
            // The client is told its own database name instead (the connection's).
            Token::EnvChange(EnvChange::Database { .. }) => {}
            Token::EnvChange(EnvChange::PacketSize { new, .. }) => {
                size = usize::try_from(new)
                    .unwrap_or(packet::MAX_PACKET)
                    .clamp(512, packet::MAX_PACKET);
                kept.extend_from_slice(raw);
            }
            Token::LoginAck(_) => {
                logged_in = true;
                kept.extend_from_slice(raw);
            }
            Token::FeatureExtAck(_) | Token::Done(_) => {}
            _ => kept.extend_from_slice(raw),
        }
    }
    if !logged_in {
        return Err(TdsError::Target(
            "the target's login response has no LOGINACK".into(),
        ));
    }
    Ok(Attempt::Done(Target {
        stream,
        packet_size: size,
        login_tokens: kept,
        buf,
    }))
}

/// Send our PRELOGIN offering `encryption` (and saying the login will carry an access
/// token, with `fedauth`); the target's answer.
async fn prelogin_exchange<S>(
    s: &mut S,
    buf: &mut BytesMut,
    reader: &mut MessageReader,
    encryption: u8,
    fedauth: bool,
) -> Result<PreLogin>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let ours = PreLogin {
        version: prelogin::GATEWAY_VERSION,
        encryption,
        fed_auth_required: fedauth.then_some(1),
        ..PreLogin::default()
    };
    wire::write_message(
        s,
        packet::PRELOGIN,
        &ours.encode(),
        crate::front::INITIAL_PACKET,
    )
    .await
    .map_err(TdsError::target_io)?;
    let m = wire::read_message(s, buf, reader)
        .await
        .map_err(TdsError::target_io)?
        .ok_or_else(|| TdsError::Target("the target closed the connection at PRELOGIN".into()))?;
    PreLogin::parse(&m.payload).map_err(TdsError::target_codec)
}
