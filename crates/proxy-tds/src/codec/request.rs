//! Client requests: SQL batches, RPCs (`sp_executesql` and friends, procedures by name) and
//! transaction-manager requests, each after its ALL_HEADERS.

use super::text;
use super::{CodecError, Result};

/// Headers at most in ALL_HEADERS.
const MAX_HEADERS: usize = 16;
/// Parameters at most in one RPC.
const MAX_PARAMS: usize = 2100;
/// PLP chunks at most in one value.
const MAX_CHUNKS: usize = 1 << 20;

/// ALL_HEADERS' headers: `(type, data)` pairs.
pub type Headers = Vec<(u16, Vec<u8>)>;

/// ALL_HEADERS and the bytes it took.
pub fn all_headers(p: &[u8]) -> Result<(Headers, usize)> {
    let total = p
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or(CodecError::Truncated("ALL_HEADERS"))?;
    if total < 4 || total > p.len() {
        return Err(CodecError::Invalid(format!(
            "ALL_HEADERS length {total} does not fit the {}-byte request",
            p.len()
        )));
    }
    let mut out = Vec::new();
    let mut at = 4;
    while at < total {
        if out.len() >= MAX_HEADERS {
            return Err(CodecError::TooLong {
                what: "ALL_HEADERS",
                len: out.len() + 1,
                max: MAX_HEADERS,
            });
        }
        let h = p
            .get(at..at + 6)
            .ok_or(CodecError::Truncated("ALL_HEADERS header"))?;
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let ty = u16::from_le_bytes([h[4], h[5]]);
        if len < 6 || at + len > total {
            return Err(CodecError::Invalid(format!(
                "an ALL_HEADERS header of length {len} does not fit"
            )));
        }
        out.push((ty, p[at + 6..at + len].to_vec()));
        at += len;
    }
    Ok((out, total))
}

/// A SQL batch: its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlBatch {
    pub text: String,
}

impl SqlBatch {
    pub fn parse(p: &[u8]) -> Result<SqlBatch> {
        // TDS 7.2 and later always send ALL_HEADERS; its first DWORD is its length.
        let (_, used) = all_headers(p)?;
        Ok(SqlBatch {
            text: text::decode(&p[used..], "SQL batch")?,
        })
    }
}

/// The procedure an RPC calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcRef {
    /// A system procedure by id (`sp_executesql` is 10).
    Id(u16),
    Name(String),
}

pub const SP_EXECUTESQL: u16 = 10;
pub const SP_PREPARE: u16 = 11;
pub const SP_EXECUTE: u16 = 12;
pub const SP_PREPEXEC: u16 = 13;

/// A parameter's value, as far as the gateway reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamValue {
    Null,
    Text(String),
    Int(i64),
    /// Other types: their raw bytes.
    Other(Vec<u8>),
}

/// One RPC parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcParam {
    pub name: String,
    pub status: u8,
    pub type_code: u8,
    pub value: ParamValue,
}

/// An RPC request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rpc {
    pub proc: ProcRef,
    pub flags: u16,
    pub params: Vec<RpcParam>,
}

impl Rpc {
    /// Parse an RPC request. Requests batching several RPCs, and parameter types the gateway
    /// cannot read, are errors: what cannot be read is not decided, so it does not run.
    pub fn parse(p: &[u8]) -> Result<Rpc> {
        let (_, mut at) = all_headers(p)?;
        let b = |at: usize, n: usize| p.get(at..at + n).ok_or(CodecError::Truncated("RPC"));
        let len = b(at, 2)?;
        let name_len = u16::from_le_bytes([len[0], len[1]]);
        let proc = if name_len == 0xFFFF {
            let id = b(at + 2, 2)?;
            at += 4;
            ProcRef::Id(u16::from_le_bytes([id[0], id[1]]))
        } else {
            let (name, used) = text::us_varchar(&p[at..], "RPC procedure name")?;
            at += used;
            ProcRef::Name(name)
        };
        let f = b(at, 2)?;
        let flags = u16::from_le_bytes([f[0], f[1]]);
        at += 2;
        let mut params = Vec::new();
        while at < p.len() {
            if matches!(p[at], 0x80 | 0xFF) {
                return Err(CodecError::Invalid(
                    "several RPCs in one request are not supported through the gateway".into(),
                ));
            }
            if params.len() >= MAX_PARAMS {
                return Err(CodecError::TooLong {
                    what: "RPC parameters",
                    len: params.len() + 1,
                    max: MAX_PARAMS,
                });
            }
            let (name, used) = text::b_varchar(&p[at..], "RPC parameter name")?;
            at += used;
            let status = *p.get(at).ok_or(CodecError::Truncated("RPC parameter"))?;
            at += 1;
            let (ty, used) = TypeInfo::parse(&p[at..])?;
            at += used;
            let (value, used) = ty.value(&p[at..])?;
            at += used;
            params.push(RpcParam {
                name,
                status,
                type_code: ty.code,
                value,
            });
        }
        Ok(Rpc {
            proc,
            flags,
            params,
        })
    }

    /// The statement text this RPC runs, for the procedures that take one:
    /// `sp_executesql` (its first parameter), `sp_prepare` and `sp_prepexec` (their third).
    pub fn statement(&self) -> Option<&str> {
        let index = match &self.proc {
            ProcRef::Id(SP_EXECUTESQL) => 0,
            ProcRef::Id(SP_PREPARE | SP_PREPEXEC) => 2,
            ProcRef::Name(n) if n.eq_ignore_ascii_case("sp_executesql") => 0,
            ProcRef::Name(n)
                if n.eq_ignore_ascii_case("sp_prepare")
                    || n.eq_ignore_ascii_case("sp_prepexec") =>
            {
                2
            }
            _ => return None,
        };
        match &self.params.get(index)?.value {
            ParamValue::Text(t) => Some(t),
            _ => None,
        }
    }
}

/// How a value's length is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Len {
    Fixed(usize),
    Byte,
    UShort,
    Long,
    Plp,
}

/// Enough of a TYPE_INFO to find a value's end and read text and integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TypeInfo {
    code: u8,
    len: Len,
    unicode: bool,
    text: bool,
    integer: bool,
}

impl TypeInfo {
    fn parse(b: &[u8]) -> Result<(TypeInfo, usize)> {
        let code = *b.first().ok_or(CodecError::Truncated("TYPE_INFO"))?;
        let need = |n: usize| b.get(..n).ok_or(CodecError::Truncated("TYPE_INFO"));
        let plain = |len| TypeInfo {
            code,
            len,
            unicode: false,
            text: false,
            integer: false,
        };
        Ok(match code {
            0x1F => (plain(Len::Fixed(0)), 1),
            0x30 | 0x32 => (plain(Len::Fixed(1)), 1),
            0x34 => (plain(Len::Fixed(2)), 1),
            0x38 | 0x3A | 0x3B | 0x7A => (plain(Len::Fixed(4)), 1),
            0x3C | 0x3D | 0x3E | 0x7F => (plain(Len::Fixed(8)), 1),
            0x26 => {
                need(2)?;
                (
                    TypeInfo {
                        integer: true,
                        ..plain(Len::Byte)
                    },
                    2,
                )
            }
            0x24 | 0x68 | 0x6D | 0x6E | 0x6F => {
                need(2)?;
                (plain(Len::Byte), 2)
            }
            0x37 | 0x3F | 0x6A | 0x6C => {
                need(4)?;
                (plain(Len::Byte), 4)
            }
            0x28 => (plain(Len::Byte), 1),
            0x29..=0x2B => {
                need(2)?;
                (plain(Len::Byte), 2)
            }
            0xA5 | 0xAD => {
                let m = need(3)?;
                let max = u16::from_le_bytes([m[1], m[2]]);
                (plain(if max == 0xFFFF { Len::Plp } else { Len::UShort }), 3)
            }
            0xA7 | 0xAF | 0xE7 | 0xEF => {
                let m = need(8)?;
                let max = u16::from_le_bytes([m[1], m[2]]);
                (
                    TypeInfo {
                        unicode: code >= 0xE7,
                        text: true,
                        ..plain(if max == 0xFFFF { Len::Plp } else { Len::UShort })
                    },
                    8,
                )
            }
            0x23 | 0x63 => {
                need(10)?;
                (
                    TypeInfo {
                        unicode: code == 0x63,
                        text: true,
                        ..plain(Len::Long)
                    },
                    10,
                )
            }
            0x22 | 0x62 => {
                need(5)?;
                (plain(Len::Long), 5)
            }
            0xF1 => {
                let m = need(2)?;
                if m[1] != 0 {
                    return Err(CodecError::Invalid(
                        "XML parameters with a schema are not supported".into(),
                    ));
                }
                (plain(Len::Plp), 2)
            }
            other => {
                return Err(CodecError::Invalid(format!(
                    "RPC parameter type {other:#04x} is not supported through the gateway"
                )));
            }
        })
    }

    /// The value at the start of `b` and the bytes it took.
    fn value(&self, b: &[u8]) -> Result<(ParamValue, usize)> {
        let (raw, used): (Option<Vec<u8>>, usize) = match self.len {
            Len::Fixed(n) => (
                Some(
                    b.get(..n)
                        .ok_or(CodecError::Truncated("RPC value"))?
                        .to_vec(),
                ),
                n,
            ),
            Len::Byte => {
                let n = usize::from(*b.first().ok_or(CodecError::Truncated("RPC value"))?);
                if n == 0 && !self.text {
                    (None, 1)
                } else {
                    let v = b.get(1..1 + n).ok_or(CodecError::Truncated("RPC value"))?;
                    (Some(v.to_vec()), 1 + n)
                }
            }
            Len::UShort => {
                let l = b.get(..2).ok_or(CodecError::Truncated("RPC value"))?;
                let n = u16::from_le_bytes([l[0], l[1]]);
                if n == 0xFFFF {
                    (None, 2)
                } else {
                    let n = usize::from(n);
                    let v = b.get(2..2 + n).ok_or(CodecError::Truncated("RPC value"))?;
                    (Some(v.to_vec()), 2 + n)
                }
            }
            Len::Long => {
                let l = b.get(..4).ok_or(CodecError::Truncated("RPC value"))?;
                let n = u32::from_le_bytes([l[0], l[1], l[2], l[3]]);
                if n == u32::MAX {
                    (None, 4)
                } else {
                    let n = n as usize;
                    let v = b.get(4..4 + n).ok_or(CodecError::Truncated("RPC value"))?;
                    (Some(v.to_vec()), 4 + n)
                }
            }
            Len::Plp => plp(b)?,
        };
        let Some(raw) = raw else {
            return Ok((ParamValue::Null, used));
        };
        let value = if self.text && self.unicode {
            ParamValue::Text(text::decode(&raw, "RPC text parameter")?)
        } else if self.text {
            // Single-byte text: the gateway reads ASCII; other bytes are shown replaced.
            ParamValue::Text(String::from_utf8_lossy(&raw).into_owned())
        } else if self.integer {
            let mut v = [0u8; 8];
            let n = raw.len().min(8);
            v[..n].copy_from_slice(&raw[..n]);
            let x = i64::from_le_bytes(v);
            // Sign-extend narrower integers.
            let shift = 64 - 8 * n as u32;
            ParamValue::Int(if n == 0 { 0 } else { (x << shift) >> shift })
        } else {
            ParamValue::Other(raw)
        };
        Ok((value, used))
    }
}

/// A PLP value: total length (NULL as all ones), then chunks until a zero-length one.
fn plp(b: &[u8]) -> Result<(Option<Vec<u8>>, usize)> {
    let t = b.get(..8).ok_or(CodecError::Truncated("PLP value"))?;
    let total = u64::from_le_bytes([t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]]);
    if total == u64::MAX {
        return Ok((None, 8));
    }
    let mut at = 8;
    let mut out = Vec::new();
    for _ in 0..MAX_CHUNKS {
        let l = b
            .get(at..at + 4)
            .ok_or(CodecError::Truncated("PLP chunk"))?;
        let n = u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize;
        at += 4;
        if n == 0 {
            return Ok((Some(out), at));
        }
        let chunk = b
            .get(at..at + n)
            .ok_or(CodecError::Truncated("PLP chunk"))?;
        out.extend_from_slice(chunk);
        at += n;
    }
    Err(CodecError::TooLong {
        what: "PLP chunks",
        len: MAX_CHUNKS + 1,
        max: MAX_CHUNKS,
    })
}

/// A transaction-manager request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransMgr {
    pub request: u16,
    pub name: Option<String>,
}

pub const TM_BEGIN_XACT: u16 = 5;
pub const TM_COMMIT_XACT: u16 = 7;
pub const TM_ROLLBACK_XACT: u16 = 8;
pub const TM_SAVE_XACT: u16 = 9;

impl TransMgr {
    pub fn parse(p: &[u8]) -> Result<TransMgr> {
        let (_, at) = all_headers(p)?;
        let r = p
            .get(at..at + 2)
            .ok_or(CodecError::Truncated("transaction request"))?;
        let request = u16::from_le_bytes([r[0], r[1]]);
        let rest = &p[at + 2..];
        let name = match request {
            // Isolation level, then the name.
            TM_BEGIN_XACT => rest
                .get(1..)
                .map(|b| text::b_varchar(b, "transaction name"))
                .transpose()?
                .map(|(n, _)| n),
            TM_COMMIT_XACT | TM_ROLLBACK_XACT | TM_SAVE_XACT => {
                Some(text::b_varchar(rest, "transaction name")?.0)
            }
            _ => None,
        };
        Ok(TransMgr { request, name })
    }

    /// The T-SQL this request amounts to, for classification: `BEGIN TRANSACTION`, …; other
    /// requests (distributed transactions) are described, not SQL, and so unknown.
    pub fn describe(&self) -> String {
        let name = self
            .name
            .as_deref()
            .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_alphanumeric() || c == '_'))
            .map(|n| format!(" {n}"))
            .unwrap_or_default();
        match self.request {
            TM_BEGIN_XACT => format!("BEGIN TRANSACTION{name}"),
            TM_COMMIT_XACT => format!("COMMIT TRANSACTION{name}"),
            TM_ROLLBACK_XACT => format!("ROLLBACK TRANSACTION{name}"),
            TM_SAVE_XACT => format!("SAVE TRANSACTION{name}"),
            other => format!("<transaction manager request {other}>"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ALL_HEADERS with one transaction-descriptor header, as drivers send it.
    fn headers() -> Vec<u8> {
        let mut h = 22u32.to_le_bytes().to_vec();
        h.extend_from_slice(&18u32.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&1u32.to_le_bytes());
        h
    }

    fn nvarchar(name: &str, v: &str) -> Vec<u8> {
        let mut p = vec![u8::try_from(name.encode_utf16().count()).unwrap()];
        p.extend(text::encode(name));
        p.push(0);
        p.push(0xE7);
        p.extend_from_slice(&8000u16.to_le_bytes());
        p.extend_from_slice(&[0x09, 0x04, 0xD0, 0x00, 0x34]);
        let t = text::encode(v);
        p.extend_from_slice(&(t.len() as u16).to_le_bytes());
        p.extend(t);
        p
    }

    #[test]
    fn batches_read_their_text_after_the_headers() {
        let mut p = headers();
        p.extend(text::encode("select 1; drop table t"));
        assert_eq!(SqlBatch::parse(&p).unwrap().text, "select 1; drop table t");
        let mut bad = p.clone();
        bad[..4].copy_from_slice(&9999u32.to_le_bytes());
        assert!(SqlBatch::parse(&bad).is_err());
        let mut odd = headers();
        odd.push(0x41);
        assert!(SqlBatch::parse(&odd).is_err());
    }

    #[test]
    fn sp_executesql_yields_its_statement_and_parameters() {
        let mut p = headers();
        p.extend_from_slice(&0xFFFFu16.to_le_bytes());
        p.extend_from_slice(&SP_EXECUTESQL.to_le_bytes());
        p.extend_from_slice(&0u16.to_le_bytes());
        p.extend(nvarchar("", "delete from orders where id = @p1"));
        p.extend(nvarchar("", "@p1 int"));
        // @p1 INTN(4) = -7
        p.extend([3u8]);
        p.extend(text::encode("@p1"));
        p.extend([0u8, 0x26, 4, 4]);
        p.extend_from_slice(&(-7i32).to_le_bytes());
        let rpc = Rpc::parse(&p).unwrap();
        assert_eq!(rpc.proc, ProcRef::Id(SP_EXECUTESQL));
        assert_eq!(rpc.statement(), Some("delete from orders where id = @p1"));
        assert_eq!(rpc.params[2].value, ParamValue::Int(-7));
        // A second RPC batched behind it is refused, not skipped.
        let mut two = p.clone();
        two.push(0xFF);
        two.extend_from_slice(&[0xFF, 0xFF, 10, 0, 0, 0]);
        assert!(Rpc::parse(&two).is_err());
    }

    #[test]
    fn procedures_by_name_plp_values_and_unknown_types() {
        let mut p = headers();
        let name = text::encode("dbo.report");
        p.extend_from_slice(&10u16.to_le_bytes());
        p.extend(name);
        p.extend_from_slice(&0u16.to_le_bytes());
        // NVARCHAR(MAX) as PLP in two chunks.
        p.extend([2u8]);
        p.extend(text::encode("@s"));
        p.extend([0u8, 0xE7, 0xFF, 0xFF, 0x09, 0x04, 0xD0, 0x00, 0x34]);
        let v = text::encode("abcd");
        p.extend_from_slice(&(v.len() as u64).to_le_bytes());
        p.extend_from_slice(&4u32.to_le_bytes());
        p.extend_from_slice(&v[..4]);
        p.extend_from_slice(&4u32.to_le_bytes());
        p.extend_from_slice(&v[4..]);
        p.extend_from_slice(&0u32.to_le_bytes());
        let rpc = Rpc::parse(&p).unwrap();
        assert_eq!(rpc.proc, ProcRef::Name("dbo.report".into()));
        assert_eq!(rpc.params[0].value, ParamValue::Text("abcd".into()));
        assert_eq!(rpc.statement(), None);
        let mut udt = headers();
        udt.extend_from_slice(&0xFFFFu16.to_le_bytes());
        udt.extend_from_slice(&SP_EXECUTESQL.to_le_bytes());
        udt.extend_from_slice(&0u16.to_le_bytes());
        udt.extend([0u8, 0, 0xF0]);
        assert!(Rpc::parse(&udt).is_err());
    }

    #[test]
    fn transaction_requests_read_as_the_statements_they_amount_to() {
        let mut p = headers();
        p.extend_from_slice(&TM_BEGIN_XACT.to_le_bytes());
        p.push(0);
        p.push(2);
        p.extend(text::encode("t1"));
        let t = TransMgr::parse(&p).unwrap();
        assert_eq!(t.describe(), "BEGIN TRANSACTION t1");
        let mut c = headers();
        c.extend_from_slice(&TM_COMMIT_XACT.to_le_bytes());
        c.push(0);
        c.push(0);
        assert_eq!(
            TransMgr::parse(&c).unwrap().describe(),
            "COMMIT TRANSACTION"
        );
    }
}
