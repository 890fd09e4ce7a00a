//! One client connection: login, a PostgreSQL connection of its own, then requests one at a
//! time. A task reads the client meanwhile, so an Attention is seen while an answer is being
//! written.

use std::sync::Arc;

use bytes::BytesMut;
use proxy_tds::codec::messages::{Done, EnvChange, done_status};
use proxy_tds::codec::packet::{self, Message, MessageReader};
use proxy_tds::codec::request::SqlBatch;
use proxy_tds::codec::rpc::RpcRequest;
use proxy_tds::codec::write::{self, DoneKind};
use tokio::io::{AsyncReadExt, AsyncWrite, ReadHalf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};

use crate::Shared;
use crate::error::{Error, Result};
use crate::exec::{self, PG_ERROR_CLASS, PG_ERROR_NUMBER, TxState};
use crate::login::{self, ClientIo, INITIAL_PACKET};
use crate::out::Out;
use crate::pg::PgConn;
use crate::{rpc, tm, tsql};

/// Run one client connection to its end.
pub(crate) async fn handle(shared: Arc<Shared>, tcp: TcpStream, spid: u16) {
    let peer = tcp.peer_addr().ok();
    if let Err(e) = serve(&shared, tcp, spid).await {
        tracing::debug!(?peer, error = %e, "session ended");
    }
}

async fn serve(shared: &Shared, tcp: TcpStream, spid: u16) -> Result<()> {
    let _ = tcp.set_nodelay(true);
    let login::Accepted {
        mut stream,
        buf,
        login,
        encrypted,
    } = login::accept(tcp, shared.config.tls.as_ref()).await?;
    shared.record_login(&login, encrypted);
    let config = &shared.config;
    let mut pg = match PgConn::connect(&config.postgres, config.max_pg_message).await {
        Ok(pg) => pg,
        Err(e) => {
            login::refuse(&mut stream, &e.to_string()).await;
            return Err(e);
        }
    };
    let response = login::login_response(&login, &config.postgres.dbname)?;
    let (rd, wr) = tokio::io::split(stream);
    let mut out = Out::new(wr, INITIAL_PACKET, spid);
    out.tokens().extend_from_slice(&response);
    out.end_message().await?;
    out.set_packet_size(login::negotiated_packet_size(&login));

    let attention = Arc::new(Notify::new());
    let (tx, mut rx) = mpsc::channel(2);
    let reader = tokio::spawn(read_requests(
        rd,
        buf,
        config.max_request,
        tx,
        attention.clone(),
    ));
    let mut transaction = TxState::default();
    let result = loop {
        tokio::select! {
            // A request already read goes first: an Attention after it is for it.
            biased;
            m = rx.recv() => match m {
                None => break Ok(()),
                Some(Err(e)) => break Err(e),
                Some(Ok(msg)) => {
                    let mut s = Session { shared, pg: &mut pg, out: &mut out, attention: &attention, tx: &mut transaction };
                    if let Err(e) = s.request(msg).await {
                        break Err(e);
                    }
                }
            },
            _ = attention.notified() => {
                // Nothing running (it ended before the Attention came): acknowledge it.
                write::write_done(out.tokens(), DoneKind::Done, &Done::with_status(done_status::ATTN));
                if let Err(e) = out.end_message().await {
                    break Err(e.into());
                }
            }
        }
    };
    reader.abort();
    pg.terminate().await;
    result
}

/// Read the client's messages: requests go to the session, Attentions are signalled at once.
async fn read_requests(
    mut rd: ReadHalf<Box<dyn ClientIo>>,
    mut buf: BytesMut,
    max_request: usize,
    tx: mpsc::Sender<Result<Message>>,
    attention: Arc<Notify>,
) {
    let mut reader = MessageReader::new(packet::MAX_PACKET, max_request);
    loop {
        match reader.next(&mut buf) {
            Ok(Some(m)) if m.ty == packet::ATTENTION => attention.notify_one(),
            Ok(Some(m)) => {
                if tx.send(Ok(m)).await.is_err() {
                    return;
                }
            }
            Ok(None) => {
                buf.reserve(16 * 1024);
                match rd.read_buf(&mut buf).await {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = tx.send(Err(Error::client_codec(e))).await;
                return;
            }
        }
    }
}

struct Session<'a, W> {
    shared: &'a Shared,
    pg: &'a mut PgConn,
    out: &'a mut Out<W>,
    attention: &'a Notify,
    tx: &'a mut TxState,
}

impl<W: AsyncWrite + Unpin> Session<'_, W> {
    async fn request(&mut self, msg: Message) -> Result<()> {
        if msg.status & (packet::STATUS_RESET | packet::STATUS_RESET_SKIP_TRAN) != 0 {
            // The session's settings stay as they are; the reset is acknowledged.
            let _ = write::write_env_change(self.out.tokens(), &EnvChange::ResetConnectionAck);
        }
        match msg.ty {
            packet::SQL_BATCH => match SqlBatch::parse(&msg.payload) {
                Ok(batch) => self.batch(&tsql::translate(&batch.text)).await,
                Err(e) => self.refuse(DoneKind::Done, &e.to_string()).await,
            },
            packet::RPC => {
                let prepared = RpcRequest::parse(&msg.payload)
                    .map_err(|e| e.to_string())
                    .and_then(|r| match r.calls.as_slice() {
                        [one] => rpc::prepare(one),
                        _ => {
                            Err("batched RPC requests are not supported by this test server".into())
                        }
                    });
                match prepared {
                    Ok(p) if has_nul(&p.sql) || p.params.iter().flatten().any(|v| has_nul(v)) => {
                        self.refuse(DoneKind::DoneProc, NUL).await
                    }
                    Ok(p) => {
                        self.shared.record_request(&p.sql);
                        self.pg.query_params(&p.sql, &p.params)?;
                        self.pg.send().await?;
                        exec::answer(self.pg, self.out, self.attention, self.tx, true).await
                    }
                    Err(e) => self.refuse(DoneKind::DoneProc, &e).await,
                }
            }
            packet::TRANS_MGR => match tm::to_sql(&msg.payload) {
                Ok(sql) => self.batch(&sql).await,
                Err(e) => self.refuse(DoneKind::Done, &e).await,
            },
            other => {
                let why = format!("requests of type {other:#04x} are not supported");
                self.refuse(DoneKind::Done, &why).await
            }
        }
    }

    async fn batch(&mut self, text: &str) -> Result<()> {
        if has_nul(text) {
            return self.refuse(DoneKind::Done, NUL).await;
        }
        self.shared.record_request(text);
        self.pg.query(text)?;
        self.pg.send().await?;
        exec::answer(self.pg, self.out, self.attention, self.tx, false).await
    }

    /// Answer a request PostgreSQL never sees with an ERROR and a DONE (or DONEPROC).
    async fn refuse(&mut self, kind: DoneKind, why: &str) -> Result<()> {
        let text = format!("tds-testserver: {why}");
        exec::put_message(
            self.out.tokens(),
            false,
            PG_ERROR_NUMBER,
            PG_ERROR_CLASS,
            &text,
        );
        write::write_done(
            self.out.tokens(),
            kind,
            &Done::with_status(done_status::ERROR),
        );
        self.out.end_message().await?;
        Ok(())
    }
}

const NUL: &str = "a NUL character cannot be sent to PostgreSQL";

fn has_nul(s: &str) -> bool {
    s.contains('\0')
}
