//! The client side of the protocol towards the target: connect, log in with the credential
//! the gateway holds (SCRAM-SHA-256, md5, cleartext or trust), and collect the parameters and
//! key the target announces.

use std::time::Duration;

use bytes::BytesMut;
use gateway_core::config::ConnectionConfig;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::codec::{self, AuthRequest, tags::backend as be};
use crate::error::{PgError, Result};
use crate::stream::TargetStream;
use crate::target_tls::{self, TargetTls};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const LOGIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Login-phase messages are small; anything larger is a broken or hostile target.
const MAX_LOGIN_MESSAGE: usize = 1024 * 1024;

/// A logged-in connection to the target, ready for queries.
pub(crate) struct TargetConn {
    pub stream: TargetStream,
    /// ParameterStatus pairs the target sent, to relay to the client.
    pub params: Vec<(String, String)>,
    pub pid: i32,
    pub key: Vec<u8>,
    /// Bytes read past the login's ReadyForQuery (normally none).
    pub leftover: BytesMut,
}

/// Connect (over TLS when `tls` is given) and log in to the connection's target as its
/// configured user.
pub(crate) async fn connect(
    conn: &ConnectionConfig,
    tls: Option<&TargetTls>,
    password: Option<&str>,
    params: &[(String, String)],
) -> Result<TargetConn> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&conn.target))
        .await
        .map_err(|_| PgError::Target(format!("target {} did not answer within 5 s", conn.target)))?
        .map_err(|e| PgError::Target(format!("target {} is unreachable: {e}", conn.target)))?;
    let _ = stream.set_nodelay(true);
    let login = async {
        let stream = match tls {
            Some(tls) => target_tls::start(stream, tls).await?,
            None => TargetStream::Plain(stream),
        };
        login(stream, conn, password, params).await
    };
    tokio::time::timeout(LOGIN_TIMEOUT, login)
        .await
        .map_err(|_| {
            PgError::Target(format!(
                "target {} did not complete login within 15 s",
                conn.target
            ))
        })?
}

async fn login(
    mut stream: TargetStream,
    conn: &ConnectionConfig,
    password: Option<&str>,
    params: &[(String, String)],
) -> Result<TargetConn> {
    let user = conn.user.as_deref().unwrap_or_default();
    let database = conn.database.as_deref().unwrap_or(user);
    let mut startup: Vec<(&str, &str)> = vec![("user", user), ("database", database)];
    startup.extend(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut out = BytesMut::with_capacity(256);
    codec::put_startup(&mut out, &startup);
    stream.write_all(&out).await.map_err(PgError::target_io)?;

    let mut buf = BytesMut::with_capacity(4096);
    let mut scram: Option<ScramSha256> = None;
    let mut result = TargetConn {
        stream,
        params: Vec::new(),
        pid: 0,
        key: Vec::new(),
        leftover: BytesMut::new(),
    };
    let need_password = || {
        password.ok_or_else(|| {
            PgError::Gateway(format!(
                "target asks for a password but connection `{}` has none configured",
                conn.name
            ))
        })
    };
    loop {
        let frame = loop {
            if let Some(f) =
                codec::next_frame(&mut buf, MAX_LOGIN_MESSAGE).map_err(|err| PgError::Codec {
                    side: gateway_core::Side::Target,
                    err,
                })?
            {
                break f;
            }
            let n = result
                .stream
                .read_buf(&mut buf)
                .await
                .map_err(PgError::target_io)?;
            if n == 0 {
                return Err(PgError::Target(
                    "target closed the connection during login".into(),
                ));
            }
        };
        let bad = |err| PgError::Codec {
            side: gateway_core::Side::Target,
            err,
        };
        out.clear();
        match frame.tag {
            be::AUTH => match codec::parse_auth_request(frame.body()).map_err(bad)? {
                AuthRequest::Ok => {}
                AuthRequest::CleartextPassword => {
                    codec::put_password(&mut out, need_password()?.as_bytes());
                }
                AuthRequest::Md5Password { salt } => {
                    let hash = md5_hash(user.as_bytes(), need_password()?.as_bytes(), salt);
                    codec::put_password(&mut out, hash.as_bytes());
                }
                AuthRequest::Sasl { mechanisms } => {
                    if !mechanisms.contains(&SCRAM_SHA_256) {
                        return Err(PgError::Target(format!(
                            "target offers no supported SASL mechanism ({})",
                            mechanisms.join(", ")
                        )));
                    }
                    let s = ScramSha256::new(
                        need_password()?.as_bytes(),
                        ChannelBinding::unsupported(),
                    );
                    codec::put_sasl_initial(&mut out, SCRAM_SHA_256, s.message());
                    scram = Some(s);
                }
                AuthRequest::SaslContinue(data) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| PgError::Target("unexpected SASL continue".into()))?;
                    s.update(data)
                        .map_err(|e| PgError::Target(format!("SCRAM exchange failed: {e}")))?;
                    codec::put_sasl_response(&mut out, s.message());
                }
                AuthRequest::SaslFinal(data) => {
                    let mut s = scram
                        .take()
                        .ok_or_else(|| PgError::Target("unexpected SASL final".into()))?;
                    s.finish(data).map_err(|e| {
                        PgError::Target(format!("target failed SCRAM server verification: {e}"))
                    })?;
                }
                AuthRequest::Other(code) => {
                    return Err(PgError::Target(format!(
                        "target asks for an unsupported authentication method ({code})"
                    )));
                }
            },
            be::PARAMETER_STATUS => {
                let (k, v) = codec::parse_parameter_status(frame.body()).map_err(bad)?;
                result.params.push((k.to_string(), v.to_string()));
            }
            be::BACKEND_KEY => {
                let (pid, key) = codec::parse_backend_key_data(frame.body()).map_err(bad)?;
                result.pid = pid;
                result.key = key.to_vec();
            }
            be::ERROR => {
                let f = codec::parse_error_fields(frame.body()).map_err(bad)?;
                return Err(PgError::Target(format!(
                    "target refused the gateway's login: {}",
                    f.message
                )));
            }
            be::NOTICE | be::NEGOTIATE_PROTOCOL_VERSION => {}
            be::READY => {
                result.leftover = buf;
                return Ok(result);
            }
            other => {
                return Err(PgError::Target(format!(
                    "unexpected message `{}` from target during login",
                    other as char
                )));
            }
        }
        if !out.is_empty() {
            result
                .stream
                .write_all(&out)
                .await
                .map_err(PgError::target_io)?;
        }
    }
}
