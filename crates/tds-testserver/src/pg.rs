//! The server's own PostgreSQL client: startup and authentication (trust, cleartext, MD5,
//! SCRAM-SHA-256), messages read with a bound on each, queries sent, and cancel requests.
//!
//! It is written on `postgres-protocol` rather than a full client so that this server decides
//! when to read (rows are read only as fast as the TDS client takes them) and sees each
//! column's type as PostgreSQL describes it.

use bytes::{BufMut, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::backend::{ErrorFields, Message};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{Error, Result};
use crate::pgconfig::PgConfig;

/// A PostgreSQL connection, however it is carried.
trait PgIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> PgIo for T {}

/// An error or notice as PostgreSQL reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PgMessage {
    pub severity: String,
    pub code: String,
    pub message: String,
}

impl PgMessage {
    pub(crate) fn from_fields(mut fields: ErrorFields<'_>) -> PgMessage {
        let mut m = PgMessage::default();
        while let Ok(Some(f)) = fields.next() {
            let v = String::from_utf8_lossy(f.value_bytes()).into_owned();
            match f.type_() {
                b'V' => m.severity = v,
                b'S' if m.severity.is_empty() => m.severity = v,
                b'C' => m.code = v,
                b'M' => m.message = v,
                _ => {}
            }
        }
        m
    }
}

/// What is needed to cancel the query running on a connection.
#[derive(Clone, Debug)]
pub struct CancelHandle {
    cfg: PgConfig,
    pid: i32,
    secret: i32,
}

impl CancelHandle {
    /// Ask PostgreSQL, on a connection of its own, to cancel the running query.
    pub async fn cancel(&self) -> Result<()> {
        let mut s = open(&self.cfg).await?;
        let mut buf = BytesMut::with_capacity(16);
        frontend::cancel_request(self.pid, self.secret, &mut buf);
        s.write_all(&buf).await?;
        s.flush().await?;
        // PostgreSQL closes the connection once it has read the request.
        let mut sink = [0u8; 16];
        let _ = s.read(&mut sink).await;
        Ok(())
    }
}

/// A logged-in connection.
pub struct PgConn {
    stream: Box<dyn PgIo>,
    buf: BytesMut,
    out: BytesMut,
    max_message: usize,
    cancel: CancelHandle,
}

async fn open(cfg: &PgConfig) -> Result<Box<dyn PgIo>> {
    if cfg.is_unix_socket() {
        #[cfg(unix)]
        {
            let path = format!("{}/.s.PGSQL.{}", cfg.host.trim_end_matches('/'), cfg.port);
            let s = tokio::net::UnixStream::connect(&path)
                .await
                .map_err(|e| Error::Postgres(format!("{path}: {e}")))?;
            return Ok(Box::new(s));
        }
        #[cfg(not(unix))]
        return Err(Error::Config("Unix sockets are not available here".into()));
    }
    let s = TcpStream::connect((cfg.host.as_str(), cfg.port))
        .await
        .map_err(|e| Error::Postgres(format!("{}:{}: {e}", cfg.host, cfg.port)))?;
    let _ = s.set_nodelay(true);
    Ok(Box::new(s))
}

fn proto(e: std::io::Error) -> Error {
    Error::Postgres(format!("protocol: {e}"))
}

impl PgConn {
    /// Connect and log in; messages longer than `max_message` bytes are refused.
    pub async fn connect(cfg: &PgConfig, max_message: usize) -> Result<PgConn> {
        let stream = open(cfg).await?;
        let mut conn = PgConn {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            out: BytesMut::with_capacity(4096),
            max_message,
            cancel: CancelHandle {
                cfg: cfg.clone(),
                pid: 0,
                secret: 0,
            },
        };
        // Text forms this server parses: ISO dates, hex bytea, shortest exact floats.
        let mut params: Vec<(&str, &str)> = vec![
            ("user", &cfg.user),
            ("database", &cfg.dbname),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("IntervalStyle", "postgres"),
            ("bytea_output", "hex"),
            ("extra_float_digits", "1"),
        ];
        if !cfg.params.iter().any(|(k, _)| k == "application_name") {
            params.push(("application_name", "tds-testserver"));
        }
        params.extend(cfg.params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        frontend::startup_message(params, &mut conn.out).map_err(proto)?;
        conn.send().await?;
        conn.authenticate(cfg).await?;
        Ok(conn)
    }

    async fn authenticate(&mut self, cfg: &PgConfig) -> Result<()> {
        let password = || {
            cfg.password
                .as_deref()
                .ok_or_else(|| Error::Postgres("PostgreSQL asks for a password; none set".into()))
        };
        let mut scram: Option<ScramSha256> = None;
        loop {
            match self.next().await? {
                Message::AuthenticationOk | Message::ParameterStatus(_) => {}
                Message::NoticeResponse(_) => {}
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(password()?.as_bytes(), &mut self.out)
                        .map_err(proto)?;
                    self.send().await?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let hash = md5_hash(cfg.user.as_bytes(), password()?.as_bytes(), body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.out).map_err(proto)?;
                    self.send().await?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut offered = false;
                    while let Some(m) = mechanisms.next().map_err(proto)? {
                        offered |= m == SCRAM_SHA_256;
                    }
                    if !offered {
                        return Err(Error::Postgres(
                            "PostgreSQL offers no SASL mechanism this server knows".into(),
                        ));
                    }
                    let s = ScramSha256::new(password()?.as_bytes(), ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut self.out)
                        .map_err(proto)?;
                    scram = Some(s);
                    self.send().await?;
                }
                Message::AuthenticationSaslContinue(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| Error::Postgres("SASL continue out of turn".into()))?;
                    s.update(body.data()).map_err(proto)?;
                    frontend::sasl_response(s.message(), &mut self.out).map_err(proto)?;
                    self.send().await?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| Error::Postgres("SASL final out of turn".into()))?;
                    s.finish(body.data()).map_err(proto)?;
                }
                Message::BackendKeyData(k) => {
                    self.cancel.pid = k.process_id();
                    self.cancel.secret = k.secret_key();
                }
                Message::ErrorResponse(e) => {
                    let m = PgMessage::from_fields(e.fields());
                    return Err(Error::Postgres(format!("login refused: {}", m.message)));
                }
                Message::ReadyForQuery(_) => return Ok(()),
                _ => {
                    return Err(Error::Postgres(
                        "unexpected message during PostgreSQL login".into(),
                    ));
                }
            }
        }
    }

    /// The handle that cancels this connection's running query.
    pub fn cancel_handle(&self) -> CancelHandle {
        self.cancel.clone()
    }

    /// The next message if it has fully arrived, without waiting.
    pub fn try_next(&mut self) -> Result<Option<Message>> {
        if self.buf.len() >= 5 {
            let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            if len > self.max_message {
                return Err(Error::Postgres(format!(
                    "a message of {len} bytes is over this server's limit of {}",
                    self.max_message
                )));
            }
            if self.buf.len() <= len {
                // Room for the whole message, now that its length is known to be bounded.
                self.buf.reserve(len + 1 - self.buf.len());
            }
        }
        Message::parse(&mut self.buf).map_err(proto)
    }

    /// Read more from PostgreSQL; a closed connection is an error.
    pub async fn fill(&mut self) -> Result<()> {
        if self.buf.capacity() - self.buf.len() < 8192 {
            self.buf.reserve(64 * 1024);
        }
        let n = self.stream.read_buf(&mut self.buf).await?;
        if n == 0 {
            return Err(Error::Postgres("PostgreSQL closed the connection".into()));
        }
        Ok(())
    }

    /// The next message, waiting for it.
    pub async fn next(&mut self) -> Result<Message> {
        loop {
            if let Some(m) = self.try_next()? {
                return Ok(m);
            }
            self.fill().await?;
        }
    }

    /// The buffer messages to send are built in; [`PgConn::send`] writes it.
    pub fn out(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// Write what was built in [`PgConn::out`].
    pub async fn send(&mut self) -> Result<()> {
        self.stream.write_all(&self.out).await?;
        self.stream.flush().await?;
        self.out.clear();
        Ok(())
    }

    /// Queue a simple query (one or more statements).
    pub fn query(&mut self, sql: &str) -> Result<()> {
        if sql.contains('\0') {
            return Err(Error::Client("a NUL character in the SQL text".into()));
        }
        frontend::query(sql, &mut self.out).map_err(proto)
    }

    /// Queue one statement with `$1..` parameters given in text form (`None` is NULL), every
    /// result column asked for in text form: Parse, Bind, Describe, Execute, Sync.
    pub fn query_params(&mut self, sql: &str, params: &[Option<String>]) -> Result<()> {
        if sql.contains('\0') || params.iter().flatten().any(|p| p.contains('\0')) {
            return Err(Error::Client("a NUL character in the SQL text".into()));
        }
        frontend::parse("", sql, std::iter::empty(), &mut self.out).map_err(proto)?;
        frontend::bind(
            "",
            "",
            std::iter::empty(),
            params,
            |p, buf| match p {
                Some(v) => {
                    buf.put_slice(v.as_bytes());
                    Ok(postgres_protocol::IsNull::No)
                }
                None => Ok(postgres_protocol::IsNull::Yes),
            },
            std::iter::empty(),
            &mut self.out,
        )
        .map_err(|e| match e {
            frontend::BindError::Conversion(e) => Error::Client(e.to_string()),
            frontend::BindError::Serialization(e) => proto(e),
        })?;
        frontend::describe(b'P', "", &mut self.out).map_err(proto)?;
        frontend::execute("", 0, &mut self.out).map_err(proto)?;
        frontend::sync(&mut self.out);
        Ok(())
    }

    /// Tell PostgreSQL the session is over.
    pub async fn terminate(mut self) {
        frontend::terminate(&mut self.out);
        let _ = self.send().await;
    }
}
