//! Client requests other than RPC (see `rpc`): ALL_HEADERS (which SQLBatch, RPC and TransMgr
//! start with in TDS 7.2 and later), SQLBatch and Transaction Manager requests.
//!
//! ALL_HEADERS is required: the gateway speaks TDS 7.2+ only, so a payload without it is
//! refused rather than guessed at.

use bytes::{BufMut, Bytes, BytesMut};

use super::cursor::{Cursor, bounded};
use super::text::{decode, encode, units};
use super::{CodecError, Result};

/// Bound on the ALL_HEADERS block (three small headers in practice).
pub const MAX_ALL_HEADERS_LEN: usize = 8 * 1024;

/// ALL_HEADERS header types.
pub mod header_type {
    pub const QUERY_NOTIFICATIONS: u16 = 1;
    pub const TRANSACTION_DESCRIPTOR: u16 = 2;
    pub const TRACE_ACTIVITY: u16 = 3;
}

/// Query notification subscription (header type 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryNotification {
    pub notify_id: String,
    pub ssb_deployment: String,
    pub timeout: Option<u32>,
}

/// Transaction descriptor (header type 2): the transaction the request runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransactionDescriptor {
    pub descriptor: u64,
    pub outstanding_requests: u32,
}

/// The ALL_HEADERS block. Each header type may appear once; unknown types are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllHeaders {
    pub query_notification: Option<QueryNotification>,
    pub transaction: Option<TransactionDescriptor>,
    /// Trace activity (header type 3): activity GUID (16) and sequence (4).
    pub trace_activity: Option<[u8; 20]>,
}

fn read_us_unicode(cur: &mut Cursor<'_>, what: &'static str) -> Result<String> {
    let len = usize::from(cur.u16_le(what)?);
    decode(cur.take(len, what)?, what)
}

fn dup(what: &str) -> CodecError {
    CodecError::Invalid(format!("ALL_HEADERS has two {what} headers"))
}

impl AllHeaders {
    /// A block with only a transaction descriptor (what drivers send outside notifications).
    pub fn with_transaction(descriptor: u64, outstanding_requests: u32) -> Self {
        AllHeaders {
            transaction: Some(TransactionDescriptor {
                descriptor,
                outstanding_requests,
            }),
            ..AllHeaders::default()
        }
    }

    /// Reads the block at the cursor; TotalLength includes its own 4 bytes.
    pub fn parse(cur: &mut Cursor<'_>) -> Result<Self> {
        let total = bounded(
            "ALL_HEADERS",
            u64::from(cur.u32_le("ALL_HEADERS TotalLength")?),
            MAX_ALL_HEADERS_LEN,
        )?;
        let body_len = total
            .checked_sub(4)
            .ok_or_else(|| CodecError::Invalid(format!("ALL_HEADERS TotalLength {total} < 4")))?;
        let mut body = Cursor::new(cur.take(body_len, "ALL_HEADERS")?);
        let mut out = AllHeaders::default();
        while !body.is_empty() {
            let len = usize::try_from(body.u32_le("header length")?).unwrap_or(usize::MAX);
            let data_len = len.checked_sub(6).ok_or_else(|| {
                CodecError::Invalid(format!("ALL_HEADERS header length {len} < 6"))
            })?;
            let ty = body.u16_le("header type")?;
            let mut data = Cursor::new(body.take(data_len, "header data")?);
            match ty {
                header_type::QUERY_NOTIFICATIONS => {
                    let notify_id = read_us_unicode(&mut data, "NotifyId")?;
                    let ssb_deployment = read_us_unicode(&mut data, "SSBDeployment")?;
                    let timeout = match data.remaining() {
                        0 => None,
                        _ => Some(data.u32_le("NotifyTimeout")?),
                    };
                    let qn = QueryNotification {
                        notify_id,
                        ssb_deployment,
                        timeout,
                    };
                    if out.query_notification.replace(qn).is_some() {
                        return Err(dup("query notification"));
                    }
                }
                header_type::TRANSACTION_DESCRIPTOR => {
                    let td = TransactionDescriptor {
                        descriptor: data.u64_le("transaction descriptor")?,
                        outstanding_requests: data.u32_le("outstanding request count")?,
                    };
                    if out.transaction.replace(td).is_some() {
                        return Err(dup("transaction descriptor"));
                    }
                }
                header_type::TRACE_ACTIVITY => {
                    if out
                        .trace_activity
                        .replace(data.array("activity id")?)
                        .is_some()
                    {
                        return Err(dup("trace activity"));
                    }
                }
                other => {
                    return Err(CodecError::Invalid(format!(
                        "unknown ALL_HEADERS header type {other}"
                    )));
                }
            }
            if !data.is_empty() {
                return Err(CodecError::Invalid(format!(
                    "ALL_HEADERS header type {ty} has {} extra bytes",
                    data.remaining()
                )));
            }
        }
        Ok(out)
    }

    /// Appends the block.
    pub fn encode(&self, out: &mut BytesMut) -> Result<()> {
        let mut body = BytesMut::new();
        if let Some(qn) = &self.query_notification {
            let mut d = BytesMut::new();
            for (s, what) in [
                (&qn.notify_id, "NotifyId"),
                (&qn.ssb_deployment, "SSBDeployment"),
            ] {
                let bytes = units(s) * 2;
                d.put_u16_le(u16::try_from(bytes).map_err(|_| CodecError::TooLong {
                    what,
                    len: bytes,
                    max: usize::from(u16::MAX),
                })?);
                d.put_slice(&encode(s));
            }
            if let Some(t) = qn.timeout {
                d.put_u32_le(t);
            }
            put_header(&mut body, header_type::QUERY_NOTIFICATIONS, &d);
        }
        if let Some(td) = &self.transaction {
            let mut d = BytesMut::with_capacity(12);
            d.put_u64_le(td.descriptor);
            d.put_u32_le(td.outstanding_requests);
            put_header(&mut body, header_type::TRANSACTION_DESCRIPTOR, &d);
        }
        if let Some(a) = &self.trace_activity {
            put_header(&mut body, header_type::TRACE_ACTIVITY, a);
        }
        let total = body.len() + 4;
        if total > MAX_ALL_HEADERS_LEN {
            return Err(CodecError::TooLong {
                what: "ALL_HEADERS",
                len: total,
                max: MAX_ALL_HEADERS_LEN,
            });
        }
        out.put_u32_le(total as u32);
        out.put_slice(&body);
        Ok(())
    }
}

fn put_header(out: &mut BytesMut, ty: u16, data: &[u8]) {
    // Bounded by MAX_ALL_HEADERS_LEN, checked on the total.
    out.put_u32_le((data.len() + 6) as u32);
    out.put_u16_le(ty);
    out.put_slice(data);
}

/// A SQL batch (packet type 0x01): ALL_HEADERS then the statement text in UTF-16LE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlBatch {
    pub headers: AllHeaders,
    /// The SQL text, decoded strictly (see `text`): what the policy sees is what the server runs.
    pub text: String,
}

impl SqlBatch {
    /// Parses a SQLBatch payload.
    pub fn parse(payload: &[u8]) -> Result<Self> {
        let mut cur = Cursor::new(payload);
        let headers = AllHeaders::parse(&mut cur)?;
        let text = decode(cur.rest(), "SQL batch text")?;
        Ok(SqlBatch { headers, text })
    }

    /// Encodes the payload.
    pub fn encode(&self) -> Result<Bytes> {
        let mut out = BytesMut::with_capacity(64 + self.text.len() * 2);
        self.headers.encode(&mut out)?;
        out.put_slice(&encode(&self.text));
        Ok(out.freeze())
    }
}

/// Transaction Manager request types.
pub mod tm {
    pub const GET_DTC_ADDRESS: u16 = 0;
    pub const PROPAGATE_XACT: u16 = 1;
    pub const BEGIN_XACT: u16 = 5;
    pub const PROMOTE_XACT: u16 = 6;
    pub const COMMIT_XACT: u16 = 7;
    pub const ROLLBACK_XACT: u16 = 8;
    pub const SAVE_XACT: u16 = 9;
}

/// The new transaction a commit or rollback asks to begin straight after (fBeginXact).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeginXact {
    pub isolation_level: u8,
    pub name: String,
}

/// A Transaction Manager request (packet type 0x0E).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransMgr {
    pub headers: AllHeaders,
    /// One of `tm::*`.
    pub request: u16,
    /// BEGIN: the new transaction's name; COMMIT/ROLLBACK/SAVE: the transaction or savepoint.
    pub name: Option<String>,
    /// BEGIN: the isolation level (0 unchanged, 1 read uncommitted … 5 snapshot).
    pub isolation_level: Option<u8>,
    /// COMMIT/ROLLBACK with fBeginXact: the transaction begun afterwards.
    pub begin_after: Option<BeginXact>,
    /// GET_DTC_ADDRESS / PROPAGATE_XACT: the opaque DTC buffer.
    pub dtc_data: Option<Bytes>,
}

/// A transaction name: B_VARBYTE, a byte count then UTF-16LE.
fn read_xact_name(cur: &mut Cursor<'_>) -> Result<String> {
    let len = usize::from(cur.u8("transaction name")?);
    decode(cur.take(len, "transaction name")?, "transaction name")
}

fn put_xact_name(out: &mut BytesMut, name: &str) -> Result<()> {
    let bytes = units(name) * 2;
    out.put_u8(u8::try_from(bytes).map_err(|_| CodecError::TooLong {
        what: "transaction name",
        len: bytes,
        max: usize::from(u8::MAX),
    })?);
    out.put_slice(&encode(name));
    Ok(())
}

impl TransMgr {
    /// Parses a Transaction Manager payload; unknown request types and trailing bytes are refused.
    pub fn parse(payload: &Bytes) -> Result<Self> {
        let mut cur = Cursor::new(payload);
        let headers = AllHeaders::parse(&mut cur)?;
        let request = cur.u16_le("TM request type")?;
        let mut out = TransMgr {
            headers,
            request,
            name: None,
            isolation_level: None,
            begin_after: None,
            dtc_data: None,
        };
        match request {
            tm::GET_DTC_ADDRESS | tm::PROPAGATE_XACT => {
                let len = usize::from(cur.u16_le("DTC buffer")?);
                out.dtc_data = Some(payload.slice_ref(cur.take(len, "DTC buffer")?));
            }
            tm::BEGIN_XACT => {
                out.isolation_level = Some(cur.u8("isolation level")?);
                out.name = Some(read_xact_name(&mut cur)?);
            }
            tm::PROMOTE_XACT => {}
            tm::COMMIT_XACT | tm::ROLLBACK_XACT => {
                out.name = Some(read_xact_name(&mut cur)?);
                let flags = cur.u8("XACT_FLAGS")?;
                // fBeginXact is bit 0; Microsoft's mssql-tds driver sets bit 7 instead. Either
                // way, the new transaction's fields follow when they are there.
                if flags & 0x01 != 0 || (flags != 0 && !cur.is_empty()) {
                    let isolation_level = cur.u8("isolation level")?;
                    let name = read_xact_name(&mut cur)?;
                    out.begin_after = Some(BeginXact {
                        isolation_level,
                        name,
                    });
                }
            }
            tm::SAVE_XACT => out.name = Some(read_xact_name(&mut cur)?),
            other => {
                return Err(CodecError::Invalid(format!(
                    "unknown transaction manager request {other}"
                )));
            }
        }
        if !cur.is_empty() {
            return Err(CodecError::Invalid(format!(
                "transaction manager request {request} has {} trailing bytes",
                cur.remaining()
            )));
        }
        Ok(out)
    }

    /// Encodes the payload.
    pub fn encode(&self) -> Result<Bytes> {
        let mut out = BytesMut::new();
        self.headers.encode(&mut out)?;
        out.put_u16_le(self.request);
        let name = self.name.as_deref().unwrap_or_default();
        match self.request {
            tm::GET_DTC_ADDRESS | tm::PROPAGATE_XACT => {
                let data = self.dtc_data.as_deref().unwrap_or_default();
                out.put_u16_le(u16::try_from(data.len()).map_err(|_| CodecError::TooLong {
                    what: "DTC buffer",
                    len: data.len(),
                    max: usize::from(u16::MAX),
                })?);
                out.put_slice(data);
            }
            tm::BEGIN_XACT => {
                out.put_u8(self.isolation_level.unwrap_or(0));
                put_xact_name(&mut out, name)?;
            }
            tm::PROMOTE_XACT => {}
            tm::COMMIT_XACT | tm::ROLLBACK_XACT => {
                put_xact_name(&mut out, name)?;
                match &self.begin_after {
                    None => out.put_u8(0),
                    Some(b) => {
                        out.put_u8(0x01);
                        out.put_u8(b.isolation_level);
                        put_xact_name(&mut out, &b.name)?;
                    }
                }
            }
            tm::SAVE_XACT => put_xact_name(&mut out, name)?,
            other => {
                return Err(CodecError::Invalid(format!(
                    "unknown transaction manager request {other}"
                )));
            }
        }
        Ok(out.freeze())
    }
}

impl TransMgr {
    /// The T-SQL this request amounts to, for classification: `BEGIN TRANSACTION`, `COMMIT
    /// TRANSACTION; BEGIN TRANSACTION` (a commit that starts the next one), …; other requests
    /// (distributed transactions) are described, not SQL, and so unknown.
    pub fn describe(&self) -> String {
        let named = |n: Option<&str>| {
            n.filter(|n| !n.is_empty() && n.chars().all(|c| c.is_alphanumeric() || c == '_'))
                .map(|n| format!(" {n}"))
                .unwrap_or_default()
        };
        let name = named(self.name.as_deref());
        let then = self
            .begin_after
            .as_ref()
            .map(|b| format!("; BEGIN TRANSACTION{}", named(Some(&b.name))))
            .unwrap_or_default();
        match self.request {
            tm::BEGIN_XACT => format!("BEGIN TRANSACTION{name}"),
            tm::COMMIT_XACT => format!("COMMIT TRANSACTION{name}{then}"),
            tm::ROLLBACK_XACT => format!("ROLLBACK TRANSACTION{name}{then}"),
            tm::SAVE_XACT => format!("SAVE TRANSACTION{name}"),
            other => format!("<transaction manager request {other}>"),
        }
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
