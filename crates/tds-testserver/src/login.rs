//! A client's way in: PRELOGIN (encryption off, or TLS inside PRELOGIN packets when the
//! server has a certificate, or TDS 8.0 strict TLS first), LOGIN7 with any SQL login, and
//! the login response (LOGINACK, ENVCHANGEs, FEATUREEXTACK when asked, DONE).

use std::sync::Arc;

use bytes::BytesMut;
use proxy_tds::codec::login7::Login7;
use proxy_tds::codec::messages::{Done, EnvChange, FeatureAck, LoginAck, feature};
use proxy_tds::codec::packet::{self, MessageReader};
use proxy_tds::codec::prelogin::{self, FirstBytes, PreLogin};
use proxy_tds::codec::types::Collation;
use proxy_tds::codec::write::{self, DoneKind, INTERFACE_TSQL, TDS_7_4};
use proxy_tds::prelogin_tls::{FROM_SERVER, PreloginFramed};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::columns::COLLATION;
use crate::error::{Error, Result};

/// A client connection, however it is carried.
pub trait ClientIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ClientIo for T {}

/// Largest PRELOGIN or LOGIN7 taken.
const MAX_LOGIN_MESSAGE: usize = 128 * 1024;
/// The packet size every client starts with, and the "old" size of the packet-size change.
pub const INITIAL_PACKET: usize = 4096;
/// TDS 7.2: the oldest version this server speaks (64-bit DONE counts, PLP, ALL_HEADERS).
const TDS_7_2: u32 = 0x7209_0002;

/// The server's TLS settings.
#[derive(Clone)]
pub struct Tls {
    /// Offered inside PRELOGIN (TDS 7.x).
    pub prelogin: Arc<rustls::ServerConfig>,
    /// The same with the `tds/8.0` ALPN id, for clients that start with TLS.
    pub strict: Arc<rustls::ServerConfig>,
}

impl Tls {
    /// TLS with the PEM certificate chain and key in these files.
    pub fn from_pem_files(cert: &std::path::Path, key: &std::path::Path) -> Result<Tls> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| Error::Config(format!("{}: {e}", p.display())))
        };
        let certs = rustls_pemfile::certs(&mut read(cert)?.as_slice())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Config(format!("{}: {e}", cert.display())))?;
        let key = rustls_pemfile::private_key(&mut read(key)?.as_slice())
            .map_err(|e| Error::Config(format!("{}: {e}", key.display())))?
            .ok_or_else(|| Error::Config(format!("{}: no private key", key.display())))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| Error::Config(format!("certificate: {e}")))?;
        // A TLS 1.3 ticket sent right after the handshake could land while the handshake is
        // still framed in PRELOGIN packets; drivers do not resume TDS sessions anyway.
        config.send_tls13_tickets = 0;
        let mut strict = config.clone();
        strict.alpn_protocols = vec![b"tds/8.0".to_vec()];
        Ok(Tls {
            prelogin: Arc::new(config),
            strict: Arc::new(strict),
        })
    }
}

/// A client that has sent its LOGIN7.
pub struct Accepted {
    pub stream: Box<dyn ClientIo>,
    /// Bytes read past the LOGIN7.
    pub buf: BytesMut,
    pub login: Login7,
    pub encrypted: bool,
}

async fn read_message<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
    reader: &mut MessageReader,
    want: u8,
) -> Result<BytesMut> {
    loop {
        if let Some(m) = reader.next(buf).map_err(Error::client_codec)? {
            if m.ty != want {
                return Err(Error::Client(format!(
                    "expected a message of type {want:#04x}, got {:#04x}",
                    m.ty
                )));
            }
            return Ok(BytesMut::from(&m.payload[..]));
        }
        buf.reserve(8192);
        if s.read_buf(buf).await? == 0 {
            return Err(Error::Client("closed during login".into()));
        }
    }
}

/// Write `payload` as one message of type `ty` in packets of the initial size.
pub async fn write_message<S: AsyncWrite + Unpin>(s: &mut S, ty: u8, payload: &[u8]) -> Result<()> {
    let mut out = BytesMut::with_capacity(payload.len() + 16);
    packet::put_message(&mut out, ty, payload, INITIAL_PACKET, 0);
    s.write_all(&out).await?;
    s.flush().await?;
    Ok(())
}

async fn reply_prelogin<S: AsyncWrite + Unpin>(s: &mut S, encryption: u8) -> Result<()> {
    let reply = PreLogin {
        version: prelogin::GATEWAY_VERSION,
        encryption,
        mars: Some(0),
        ..PreLogin::default()
    };
    write_message(s, packet::TABULAR_RESULT, &reply.encode()).await
}

/// Take a new client up to its LOGIN7.
pub async fn accept(tcp: TcpStream, tls: Option<&Tls>) -> Result<Accepted> {
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        return Err(Error::Client("closed before PRELOGIN".into()));
    }
    let mut reader = MessageReader::new(packet::MAX_PACKET, MAX_LOGIN_MESSAGE);
    let mut buf = BytesMut::with_capacity(8192);
    let (mut stream, encrypted): (Box<dyn ClientIo>, bool) =
        match (prelogin::first_bytes_kind(&first), tls) {
            (FirstBytes::TlsClientHello, Some(tls)) => {
                let mut s = TlsAcceptor::from(tls.strict.clone()).accept(tcp).await?;
                read_message(&mut s, &mut buf, &mut reader, packet::PRELOGIN).await?;
                reply_prelogin(&mut s, prelogin::ENCRYPT_ON).await?;
                (Box::new(s), true)
            }
            (FirstBytes::TlsClientHello, None) => {
                return Err(Error::Client(
                    "the client starts with TLS, and this server has no certificate".into(),
                ));
            }
            (_, tls) => {
                let mut tcp = tcp;
                let p = read_message(&mut tcp, &mut buf, &mut reader, packet::PRELOGIN).await?;
                let pre = PreLogin::parse(&p).map_err(Error::client_codec)?;
                match (tls, pre.encryption) {
                    (Some(tls), e) if e != prelogin::ENCRYPT_NOT_SUP => {
                        // The whole session encrypted, never the login alone.
                        let answer = if e == prelogin::ENCRYPT_ON {
                            prelogin::ENCRYPT_ON
                        } else {
                            prelogin::ENCRYPT_REQ
                        };
                        reply_prelogin(&mut tcp, answer).await?;
                        if !buf.is_empty() {
                            return Err(Error::Client("bytes after PRELOGIN before TLS".into()));
                        }
                        let framed = PreloginFramed::new(tcp, FROM_SERVER);
                        let mut s = TlsAcceptor::from(tls.prelogin.clone())
                            .accept(framed)
                            .await?;
                        s.get_mut().0.finish_handshake()?;
                        (Box::new(s), true)
                    }
                    (_, e) => {
                        reply_prelogin(&mut tcp, prelogin::ENCRYPT_NOT_SUP).await?;
                        if matches!(e, prelogin::ENCRYPT_ON | prelogin::ENCRYPT_REQ) {
                            return Err(Error::Client(
                                "the client requires encryption, and this server has no \
                                 certificate"
                                    .into(),
                            ));
                        }
                        (Box::new(tcp), false)
                    }
                }
            }
        };
    let payload = read_message(&mut stream, &mut buf, &mut reader, packet::LOGIN7).await?;
    let login = match Login7::parse(&payload) {
        Ok(l) if l.tds_version < TDS_7_2 && l.tds_version != 0 => {
            let why = format!(
                "TDS version {:#010x} is older than 7.2, which this server needs",
                l.tds_version
            );
            refuse(&mut stream, &why).await;
            return Err(Error::Client(why));
        }
        Ok(l) => l,
        Err(e) => {
            refuse(&mut stream, &format!("login failed: {e}")).await;
            return Err(Error::client_codec(e));
        }
    };
    Ok(Accepted {
        stream,
        buf,
        login,
        encrypted,
    })
}

/// The packet size a login asked for, within what TDS allows (4096 when it asked for none).
pub fn negotiated_packet_size(login: &Login7) -> usize {
    match login.packet_size {
        0 => INITIAL_PACKET,
        n => usize::try_from(n)
            .unwrap_or(packet::MAX_PACKET)
            .clamp(packet::MIN_PACKET, packet::MAX_PACKET),
    }
}

/// Refuse the login with the error drivers show for a failed login (18456).
pub async fn refuse<S: AsyncWrite + Unpin>(s: &mut S, why: &str) {
    let mut out = BytesMut::new();
    crate::exec::put_message(&mut out, false, 18456, 14, &format!("Login failed: {why}"));
    write::write_done(
        &mut out,
        DoneKind::Done,
        &Done::with_status(proxy_tds::codec::messages::done_status::ERROR),
    );
    let _ = write_message(s, packet::TABULAR_RESULT, &out).await;
}

/// The login response: the database the client named (else `default_db`), the collation,
/// the language, LOGINACK, the negotiated packet size, FEATUREEXTACK when the client sent
/// features (FEDAUTH acknowledged when it sent a token), and the final DONE.
pub fn login_response(login: &Login7, default_db: &str) -> Result<BytesMut> {
    let mut out = BytesMut::with_capacity(512);
    let database = if login.database.is_empty() {
        default_db
    } else {
        login.database.as_str()
    };
    let bad = |e: proxy_tds::codec::CodecError| Error::Client(e.to_string());
    write::write_env_change(
        &mut out,
        &EnvChange::Database {
            new: database.to_string(),
            old: "master".into(),
        },
    )
    .map_err(bad)?;
    write::write_env_change(
        &mut out,
        &EnvChange::Collation {
            new: Some(Collation(COLLATION)),
            old: None,
        },
    )
    .map_err(bad)?;
    write::write_env_change(
        &mut out,
        &EnvChange::Language {
            new: "us_english".into(),
            old: String::new(),
        },
    )
    .map_err(bad)?;
    let version = if login.tds_version == 0 || login.tds_version >= TDS_7_4 {
        TDS_7_4
    } else {
        login.tds_version
    };
    write::write_login_ack(
        &mut out,
        &LoginAck {
            interface: INTERFACE_TSQL,
            tds_version: version,
            prog_name: "tds-testserver".into(),
            prog_version: [16, 0, 0x03, 0xE8],
        },
    )
    .map_err(bad)?;
    let size = negotiated_packet_size(login);
    write::write_env_change(
        &mut out,
        &EnvChange::PacketSize {
            new: size as u32,
            old: Some(INITIAL_PACKET as u32),
        },
    )
    .map_err(bad)?;
    if login.has_features() {
        let mut acks = Vec::new();
        if login.token.is_some() {
            acks.push(FeatureAck::fedauth());
        }
        if login
            .features
            .iter()
            .any(|(id, _)| *id == feature::UTF8_SUPPORT)
        {
            acks.push(FeatureAck::utf8_support(false));
        }
        write::write_feature_ext_ack(&mut out, &acks).map_err(bad)?;
    }
    write::write_done(&mut out, DoneKind::Done, &Done::with_status(0));
    Ok(out)
}
