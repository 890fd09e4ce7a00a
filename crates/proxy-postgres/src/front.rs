//! The server side of the protocol towards the client, up to the point where a session is
//! open: SSL/GSS negotiation, cancel requests, the startup packet and the token exchange.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::cancel::CancelMap;
use crate::codec::{self, StartupPacket, tags::frontend as fe};
use crate::error::{PgError, Result};
use crate::stream::ClientStream;

/// The client must finish its startup within this time.
pub(crate) const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest password message accepted (a token; Entra tokens run to a few KB).
const MAX_PASSWORD_MESSAGE: usize = 64 * 1024;

/// What a new client connection turned out to be.
pub(crate) enum Opening {
    /// A client that wants a session.
    Session {
        stream: ClientStream,
        buf: BytesMut,
        version: u32,
        params: Vec<(String, String)>,
    },
    /// A cancel request, already handled.
    Cancel,
}

/// Negotiate encryption and read the startup packet.
pub(crate) async fn open(
    tcp: TcpStream,
    tls: Option<&TlsAcceptor>,
    tls_required: bool,
    cancels: &Arc<CancelMap>,
) -> Result<Opening> {
    let mut stream = ClientStream::Plain(tcp);
    let mut buf = BytesMut::with_capacity(1024);
    let mut tls_done = false;
    loop {
        let packet = loop {
            if let Some(p) = codec::next_startup(&mut buf).map_err(|err| PgError::Codec {
                side: gateway_core::Side::Client,
                err,
            })? {
                break p;
            }
            let n = stream
                .read_buf(&mut buf)
                .await
                .map_err(PgError::client_io)?;
            if n == 0 {
                return Err(PgError::Client(
                    "client closed the connection during startup".into(),
                ));
            }
        };
        match packet {
            StartupPacket::SslRequest if !tls_done => {
                // Bytes sent after SSLRequest but before the handshake would be read as if
                // they came over TLS (CVE-2021-23214): refuse them.
                if !buf.is_empty() {
                    return Err(PgError::Client(
                        "data received after SSLRequest before TLS".into(),
                    ));
                }
                match (tls, stream) {
                    (Some(acceptor), ClientStream::Plain(mut tcp)) => {
                        tcp.write_all(b"S").await.map_err(PgError::client_io)?;
                        let s = acceptor
                            .accept(tcp)
                            .await
                            .map_err(|e| PgError::Client(format!("TLS handshake failed: {e}")))?;
                        stream = ClientStream::Tls(Box::new(s));
                        tls_done = true;
                    }
                    (_, mut s) => {
                        s.write_all(b"N").await.map_err(PgError::client_io)?;
                        stream = s;
                    }
                }
            }
            StartupPacket::SslRequest => {
                return Err(PgError::Client("SSLRequest repeated inside TLS".into()));
            }
            StartupPacket::GssEncRequest => {
                stream.write_all(b"N").await.map_err(PgError::client_io)?;
            }
            StartupPacket::Cancel { pid, key } => {
                cancels.cancel(pid, &key).await;
                return Ok(Opening::Cancel);
            }
            StartupPacket::Startup { version, params } => {
                if tls.is_some() && tls_required && !tls_done {
                    fatal(
                        &mut stream,
                        "28000",
                        "portcullis: this listener requires TLS; connect with sslmode=require",
                    )
                    .await;
                    return Err(PgError::Client("client did not negotiate TLS".into()));
                }
                return Ok(Opening::Session {
                    stream,
                    buf,
                    version,
                    params,
                });
            }
        }
    }
}

/// Ask for the password (the token) in cleartext and read it.
pub(crate) async fn read_token(stream: &mut ClientStream, buf: &mut BytesMut) -> Result<String> {
    let mut out = BytesMut::with_capacity(16);
    codec::put_auth_cleartext(&mut out);
    stream.write_all(&out).await.map_err(PgError::client_io)?;
    let frame = loop {
        if let Some(f) =
            codec::next_frame(buf, MAX_PASSWORD_MESSAGE).map_err(|err| PgError::Codec {
                side: gateway_core::Side::Client,
                err,
            })?
        {
            break f;
        }
        let n = stream.read_buf(buf).await.map_err(PgError::client_io)?;
        if n == 0 {
            return Err(PgError::Client(
                "client closed the connection before sending a token".into(),
            ));
        }
    };
    if frame.tag != fe::PASSWORD {
        return Err(PgError::Client(format!(
            "expected a password message, got `{}`",
            frame.tag as char
        )));
    }
    let token = codec::parse_password(frame.body()).map_err(|err| PgError::Codec {
        side: gateway_core::Side::Client,
        err,
    })?;
    Ok(token.trim().to_string())
}

/// Send a FATAL error and close. Errors writing it are ignored: the client may be gone.
pub(crate) async fn fatal(stream: &mut ClientStream, code: &str, message: &str) {
    let mut out = BytesMut::with_capacity(128 + message.len());
    codec::put_error(&mut out, "FATAL", code, message, None, None);
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

/// Startup parameters a client may pass to the target; everything else is dropped.
/// `options` and `replication` never pass unless the connection allows them.
const PASSTHROUGH: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "extra_float_digits",
    "intervalstyle",
    "bytea_output",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
];

/// The client's startup parameters that may reach the target.
pub(crate) fn passthrough_params(
    params: &[(String, String)],
    conn: &gateway_core::config::ConnectionConfig,
) -> Vec<(String, String)> {
    params
        .iter()
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase();
            PASSTHROUGH.contains(&k.as_str())
                || (k == "options" && conn.allow_options)
                || conn
                    .allow_startup_params
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(&k))
        })
        .cloned()
        .collect()
}
