//! One request's answer: PostgreSQL's messages for it, turned into TDS tokens as they arrive
//! and written to the client packet by packet. Nothing is held back but the current packet:
//! a row is read from PostgreSQL only once the rows before it are on their way.
//!
//! Each statement ends with a DONE (DONEINPROC inside an RPC) that says DONE_MORE when another
//! follows; since PostgreSQL says so only with its next message, a statement's DONE is
//! written when that message arrives. An Attention cancels the query on PostgreSQL, drains
//! what it still sends, and answers DONE with DONE_ATTN.

use bytes::BufMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use proxy_tds::codec::messages::{Done, EnvChange, ServerMessage, done_status};
use proxy_tds::codec::write::{self, DoneKind};
use tokio::io::AsyncWrite;
use tokio::sync::Notify;

use crate::columns::{ColKind, Column, put_colmetadata};
use crate::error::{Error, Result};
use crate::out::Out;
use crate::pg::{PgConn, PgMessage};
use crate::values::put_row;

/// The number of every error this server reports from PostgreSQL (a user-defined error
/// number in SQL Server's terms), at class 16 (a statement error the session survives).
pub const PG_ERROR_NUMBER: i32 = 50000;
pub const PG_ERROR_CLASS: u8 = 16;
/// The server name ERROR and INFO tokens carry.
pub const SERVER_NAME: &str = "tds-testserver";
/// Longest message text written, in characters.
const MAX_MESSAGE: usize = 4000;

/// What the session keeps between requests: the transaction PostgreSQL has open.
#[derive(Debug, Default)]
pub struct TxState {
    /// Descriptor of the open transaction, as announced to the client.
    pub current: Option<u64>,
    next: u64,
}

impl TxState {
    fn begin(&mut self) -> u64 {
        self.next += 1;
        self.current = Some(self.next);
        self.next
    }
}

/// Append an ERROR (or INFO) token with this server's name; long texts are cut.
pub fn put_message(out: &mut bytes::BytesMut, info: bool, number: i32, class: u8, text: &str) {
    let text = match text.char_indices().nth(MAX_MESSAGE) {
        Some((at, _)) => &text[..at],
        None => text,
    };
    let mut msg = ServerMessage::new(number, class, text);
    msg.server = SERVER_NAME.into();
    // Every length was bounded above, so writing cannot fail.
    let _ = if info {
        write::write_info(out, &msg)
    } else {
        write::write_error(out, &msg)
    };
}

/// SQL Server's number and text for a PostgreSQL error: a value that does not convert is
/// error 245 quoting the value as SQL Server does (`'…'`); every other error is 50000 with
/// PostgreSQL's text.
fn sqlserver_error(m: &PgMessage) -> (i32, String) {
    let conversion = (m.code == "22P02")
        .then(|| m.message.strip_prefix("invalid input syntax for type "))
        .flatten()
        .and_then(|rest| rest.split_once(": \""))
        .and_then(|(ty, value)| Some((ty, value.strip_suffix('"')?)));
    match conversion {
        Some((ty, value)) => {
            let ty = match ty {
                "integer" => "int",
                "boolean" => "bit",
                "timestamp without time zone" => "datetime2",
                "timestamp with time zone" => "datetimeoffset",
                other => other,
            };
            let text = format!(
                "Conversion failed when converting the varchar value '{value}' to data type {ty}."
            );
            (245, text)
        }
        None => (PG_ERROR_NUMBER, m.message.clone()),
    }
}

/// CurCmd of a statement's DONE, and its row count, from PostgreSQL's command tag.
fn done_for_tag(tag: &str) -> Done {
    let mut words = tag.split_whitespace();
    let verb = words.next().unwrap_or("");
    let cur_cmd = match verb {
        "SELECT" => 0xC1,
        "INSERT" => 0xC3,
        "DELETE" => 0xC4,
        "UPDATE" => 0xC5,
        "CREATE" => 0xC6,
        "DROP" => 0xC7,
        _ => 0,
    };
    let counted = matches!(
        verb,
        "SELECT" | "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "FETCH" | "MOVE" | "COPY"
    );
    let count = tag.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok());
    match count.filter(|_| counted) {
        Some(n) => Done {
            status: done_status::COUNT,
            cur_cmd,
            row_count: n,
        },
        None => Done::with_status(0),
    }
}

/// One answer being written.
struct Answer {
    rpc: bool,
    /// The DONE of the statement that ended last, written once it is known whether another
    /// follows.
    pending: Option<Done>,
    kinds: Vec<ColKind>,
    names: Vec<String>,
    /// A value of the current result could not be sent: its other rows are dropped.
    bad_result: bool,
    statement_error: bool,
    any_error: bool,
    cancelled: bool,
}

impl Answer {
    fn statement_kind(&self) -> DoneKind {
        if self.rpc {
            DoneKind::DoneInProc
        } else {
            DoneKind::Done
        }
    }

    fn flush_pending<W: AsyncWrite + Unpin>(&mut self, out: &mut Out<W>) {
        if let Some(mut d) = self.pending.take() {
            d.status |= done_status::MORE;
            write::write_done(out.tokens(), self.statement_kind(), &d);
        }
    }

    fn row<W: AsyncWrite + Unpin>(&mut self, out: &mut Out<W>, body: &[u8], ranges: &RowRanges) {
        if self.bad_result {
            return;
        }
        let values: Vec<Option<&[u8]>> = ranges
            .iter()
            .map(|r| r.as_ref().and_then(|r| body.get(r.clone())))
            .collect();
        if let Err(e) = put_row(out.tokens(), &self.kinds, &values) {
            let column = self.bad_column(&values);
            put_message(
                out.tokens(),
                false,
                PG_ERROR_NUMBER,
                PG_ERROR_CLASS,
                &format!("tds-testserver: column {column:?}: {e}"),
            );
            self.bad_result = true;
            self.statement_error = true;
            self.any_error = true;
        }
    }

    /// The name of the first column whose value has no TDS form.
    fn bad_column(&self, values: &[Option<&[u8]>]) -> String {
        let mut scratch = bytes::BytesMut::new();
        for (i, (kind, v)) in self.kinds.iter().zip(values).enumerate() {
            if let Some(raw) = v
                && crate::values::put_value(&mut scratch, *kind, raw).is_err()
            {
                return self.names.get(i).cloned().unwrap_or_default();
            }
        }
        String::new()
    }
}

type RowRanges = Vec<Option<std::ops::Range<usize>>>;

/// Write the answer to the query just sent on `pg` (a simple query for a batch, an extended
/// query for an RPC), up to and including its final DONE.
pub async fn answer<W: AsyncWrite + Unpin>(
    pg: &mut PgConn,
    out: &mut Out<W>,
    attention: &Notify,
    tx: &mut TxState,
    rpc: bool,
) -> Result<()> {
    let cancel = pg.cancel_handle();
    let mut a = Answer {
        rpc,
        pending: None,
        kinds: Vec::new(),
        names: Vec::new(),
        bad_result: false,
        statement_error: false,
        any_error: false,
        cancelled: false,
    };
    let mut ranges: RowRanges = Vec::new();
    loop {
        let Some(msg) = pg.try_next()? else {
            if !a.cancelled {
                // About to wait for PostgreSQL: send what is ready first.
                out.flush_ready().await?;
            }
            tokio::select! {
                biased;
                _ = attention.notified(), if !a.cancelled => {
                    a.cancelled = true;
                    if let Err(e) = cancel.cancel().await {
                        tracing::warn!(error = %e, "cancelling the query on PostgreSQL failed");
                    }
                }
                filled = pg.fill() => filled?,
            }
            continue;
        };
        if let Message::ReadyForQuery(_) = msg {
            break;
        }
        if a.cancelled {
            // Drained unread; a COPY FROM STDIN still has to be refused to end.
            if let Message::CopyInResponse(_) = msg {
                refuse_copy_in(pg).await?;
            }
            continue;
        }
        match msg {
            Message::RowDescription(body) => {
                a.flush_pending(out);
                let mut fields = body.fields();
                let mut columns = Vec::new();
                while let Some(f) = fields.next().map_err(pg_proto)? {
                    columns.push(Column {
                        name: f.name().to_string(),
                        kind: ColKind::for_pg(f.type_oid(), f.type_modifier()),
                    });
                }
                put_colmetadata(out.tokens(), &columns);
                a.kinds = columns.iter().map(|c| c.kind).collect();
                a.names = columns.into_iter().map(|c| c.name).collect();
                a.bad_result = false;
            }
            Message::DataRow(body) => {
                ranges.clear();
                let mut it = body.ranges();
                while let Some(r) = it.next().map_err(pg_proto)? {
                    ranges.push(r);
                }
                a.row(out, body.buffer(), &ranges);
            }
            Message::CommandComplete(body) => {
                a.flush_pending(out);
                let tag = body.tag().map_err(pg_proto)?;
                put_transaction_change(out, tx, tag);
                let mut done = done_for_tag(tag);
                if a.statement_error {
                    done.status |= done_status::ERROR;
                    a.statement_error = false;
                }
                a.pending = Some(done);
            }
            Message::EmptyQueryResponse => {
                a.flush_pending(out);
                a.pending = Some(Done::with_status(0));
            }
            Message::ErrorResponse(body) => {
                a.flush_pending(out);
                let m = PgMessage::from_fields(body.fields());
                let (number, text) = sqlserver_error(&m);
                put_message(out.tokens(), false, number, PG_ERROR_CLASS, &text);
                a.pending = Some(Done::with_status(done_status::ERROR));
                a.statement_error = false;
                a.any_error = true;
            }
            Message::NoticeResponse(body) => {
                let m = PgMessage::from_fields(body.fields());
                put_message(out.tokens(), true, 0, 0, &m.message);
            }
            Message::CopyInResponse(_) => refuse_copy_in(pg).await?,
            // COPY TO STDOUT data, protocol acknowledgements, session status: nothing to send.
            _ => {}
        }
        out.progress().await?;
    }
    finish(out, &mut a);
    out.end_message().await?;
    Ok(())
}

fn finish<W: AsyncWrite + Unpin>(out: &mut Out<W>, a: &mut Answer) {
    if a.cancelled {
        a.pending = None;
        let done = Done::with_status(done_status::ATTN);
        write::write_done(out.tokens(), DoneKind::Done, &done);
        return;
    }
    if a.rpc {
        a.flush_pending(out);
        // RETURNSTATUS 0, then the procedure's own DONEPROC.
        out.tokens().put_u8(0x79);
        out.tokens().put_i32_le(0);
        let status = if a.any_error { done_status::ERROR } else { 0 };
        write::write_done(out.tokens(), DoneKind::DoneProc, &Done::with_status(status));
    } else {
        let done = a.pending.take().unwrap_or_else(|| Done::with_status(0));
        write::write_done(out.tokens(), DoneKind::Done, &done);
    }
}

/// ENVCHANGE for a statement that began or ended a transaction, so drivers that track the
/// transaction descriptor see what SQL Server would tell them.
fn put_transaction_change<W: AsyncWrite + Unpin>(out: &mut Out<W>, tx: &mut TxState, tag: &str) {
    let change = match tag {
        "BEGIN" | "START TRANSACTION" if tx.current.is_none() => EnvChange::BeginTransaction {
            descriptor: tx.begin(),
        },
        "COMMIT" => match tx.current.take() {
            Some(descriptor) => EnvChange::CommitTransaction { descriptor },
            None => return,
        },
        "ROLLBACK" => match tx.current.take() {
            Some(descriptor) => EnvChange::RollbackTransaction { descriptor },
            None => return,
        },
        _ => return,
    };
    // These changes carry eight-byte descriptors only: writing cannot fail.
    let _ = write::write_env_change(out.tokens(), &change);
}

async fn refuse_copy_in(pg: &mut PgConn) -> Result<()> {
    frontend::copy_fail("COPY FROM STDIN is not supported over TDS", pg.out()).map_err(pg_proto)?;
    pg.send().await
}

fn pg_proto(e: std::io::Error) -> Error {
    Error::Postgres(format!("protocol: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_tags_give_counts_only_where_postgres_counts_rows() {
        let d = done_for_tag("SELECT 3");
        assert_eq!((d.status, d.cur_cmd, d.row_count), (0x10, 0xC1, 3));
        let d = done_for_tag("INSERT 0 7");
        assert_eq!((d.status, d.cur_cmd, d.row_count), (0x10, 0xC3, 7));
        let d = done_for_tag("CREATE TABLE");
        assert_eq!((d.status, d.cur_cmd, d.row_count), (0, 0, 0));
        assert_eq!(done_for_tag("SET").status, 0);
    }

    #[test]
    fn conversion_errors_quote_the_value_as_sql_server_does() {
        let m = |code: &str, message: &str| PgMessage {
            severity: "ERROR".into(),
            code: code.into(),
            message: message.into(),
        };
        assert_eq!(
            sqlserver_error(&m("22P02", "invalid input syntax for type integer: \"078-05-1120\"")),
            (
                245,
                "Conversion failed when converting the varchar value '078-05-1120' to data type int."
                    .into()
            )
        );
        let other = m("22012", "division by zero");
        assert_eq!(sqlserver_error(&other), (50000, "division by zero".into()));
    }
}
