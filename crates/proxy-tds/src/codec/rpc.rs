//! RPC requests (packet type 0x03): ALL_HEADERS, then one or more calls separated by a batch
//! flag (0xFF). Each call names a procedure (US_VARCHAR) or gives a well-known ProcID
//! (0xFFFF then the id), OptionFlags (u16), then parameters: name (B_VARCHAR), status flags,
//! TYPE_INFO, value.
//!
//! Every call of a batched request is parsed: deciding on the first alone would let the rest
//! run unseen. Encrypted (Always Encrypted) parameters and the NoExec separator (0xFE) are
//! refused.

use bytes::Bytes;

use super::cursor::Cursor;
use super::request::AllHeaders;
use super::rpc_types::{ParamValue, TypeInfo, read_type_info, read_value};
use super::text::{read_b_varchar, read_utf16_chars};
use super::{CodecError, Result};

/// Bound on parameters per call (SQL Server's own limit).
pub const MAX_PARAMS: usize = 2100;
/// Bound on calls in one request.
pub const MAX_CALLS: usize = 4096;
/// Bound on a procedure name in UTF-16 units (four bracketed 128-character parts and dots).
pub const MAX_PROC_NAME: usize = 1100;
/// Separator between batched calls (TDS 7.2+).
pub const BATCH_FLAG: u8 = 0xFF;
/// Separator marking the next call as not to be executed; refused.
pub const NO_EXEC_FLAG: u8 = 0xFE;

/// RPC OptionFlags bits.
pub mod option {
    pub const WITH_RECOMPILE: u16 = 0x01;
    pub const NO_METADATA: u16 = 0x02;
    pub const REUSE_METADATA: u16 = 0x04;
}

/// Parameter status flag bits.
pub mod param_status {
    pub const BY_REF: u8 = 0x01;
    pub const DEFAULT_VALUE: u8 = 0x02;
    pub const ENCRYPTED: u8 = 0x08;
}

/// The system procedures a call may name by ProcID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialProc {
    Cursor,
    CursorOpen,
    CursorPrepare,
    CursorExecute,
    CursorPrepExec,
    CursorUnprepare,
    CursorFetch,
    CursorOption,
    CursorClose,
    ExecuteSql,
    Prepare,
    Execute,
    PrepExec,
    PrepExecRpc,
    Unprepare,
}

const SPECIAL: [(SpecialProc, u16, &str); 15] = [
    (SpecialProc::Cursor, 1, "sp_cursor"),
    (SpecialProc::CursorOpen, 2, "sp_cursoropen"),
    (SpecialProc::CursorPrepare, 3, "sp_cursorprepare"),
    (SpecialProc::CursorExecute, 4, "sp_cursorexecute"),
    (SpecialProc::CursorPrepExec, 5, "sp_cursorprepexec"),
    (SpecialProc::CursorUnprepare, 6, "sp_cursorunprepare"),
    (SpecialProc::CursorFetch, 7, "sp_cursorfetch"),
    (SpecialProc::CursorOption, 8, "sp_cursoroption"),
    (SpecialProc::CursorClose, 9, "sp_cursorclose"),
    (SpecialProc::ExecuteSql, 10, "sp_executesql"),
    (SpecialProc::Prepare, 11, "sp_prepare"),
    (SpecialProc::Execute, 12, "sp_execute"),
    (SpecialProc::PrepExec, 13, "sp_prepexec"),
    (SpecialProc::PrepExecRpc, 14, "sp_prepexecrpc"),
    (SpecialProc::Unprepare, 15, "sp_unprepare"),
];

impl SpecialProc {
    /// The procedure for a ProcID.
    pub fn from_id(id: u16) -> Option<Self> {
        SPECIAL
            .iter()
            .find(|(_, i, _)| *i == id)
            .map(|(p, _, _)| *p)
    }

    /// The procedure for an unqualified name, compared case-insensitively.
    pub fn from_name(name: &str) -> Option<Self> {
        SPECIAL
            .iter()
            .find(|(_, _, n)| n.eq_ignore_ascii_case(name))
            .map(|(p, _, _)| *p)
    }

    /// The ProcID.
    pub fn id(self) -> u16 {
        SPECIAL
            .iter()
            .find(|(p, _, _)| *p == self)
            .map_or(0, |(_, i, _)| *i)
    }

    /// The procedure's name.
    pub fn name(self) -> &'static str {
        SPECIAL
            .iter()
            .find(|(p, _, _)| *p == self)
            .map_or("", |(_, _, n)| n)
    }

    /// Position of the SQL text among the parameters, for the procedures that carry one:
    /// sp_executesql (stmt, params, …), sp_prepare and sp_prepexec (handle, params, stmt, …),
    /// sp_cursoropen (cursor, stmt, …), sp_cursorprepare (handle, params, stmt, …),
    /// sp_cursorprepexec (handle, cursor, params, stmt, …). These procedures take their
    /// parameters by position whatever names the driver gives them.
    pub fn statement_index(self) -> Option<usize> {
        match self {
            SpecialProc::ExecuteSql => Some(0),
            SpecialProc::CursorOpen => Some(1),
            SpecialProc::Prepare | SpecialProc::PrepExec | SpecialProc::CursorPrepare => Some(2),
            SpecialProc::CursorPrepExec => Some(3),
            _ => None,
        }
    }
}

/// How a call names its procedure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcRef {
    Id(u16),
    Name(String),
}

/// One parameter of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcParam {
    /// With its leading '@', or empty for a positional parameter.
    pub name: String,
    pub status: u8,
    pub type_info: TypeInfo,
    pub value: ParamValue,
}

impl RpcParam {
    /// The TYPE_INFO type code.
    pub fn type_code(&self) -> u8 {
        self.type_info.code
    }
}

/// One call of an RPC request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rpc {
    pub proc: ProcRef,
    /// OptionFlags (`option::*`).
    pub flags: u16,
    pub params: Vec<RpcParam>,
}

/// A whole RPC request: its headers and every call in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcRequest {
    pub headers: AllHeaders,
    pub calls: Vec<Rpc>,
}

impl RpcRequest {
    /// Parses an RPC payload; a trailing batch flag is allowed, anything else left over is not.
    pub fn parse(payload: &Bytes) -> Result<Self> {
        let mut cur = Cursor::new(payload);
        let headers = AllHeaders::parse(&mut cur)?;
        let mut calls = Vec::new();
        loop {
            if calls.len() == MAX_CALLS {
                return Err(CodecError::TooLong {
                    what: "RPC calls",
                    len: calls.len() + 1,
                    max: MAX_CALLS,
                });
            }
            let (call, sep) = parse_call(&mut cur, payload)?;
            calls.push(call);
            match sep {
                None => break,
                Some(_) if cur.is_empty() => break,
                Some(_) => {}
            }
        }
        Ok(RpcRequest { headers, calls })
    }
}

/// Parses one call; returns it and the separator that ended it, if any.
fn parse_call(cur: &mut Cursor<'_>, src: &Bytes) -> Result<(Rpc, Option<u8>)> {
    let name_len = cur.u16_le("RPC NameLenProcID")?;
    let proc = if name_len == 0xFFFF {
        ProcRef::Id(cur.u16_le("RPC ProcID")?)
    } else {
        let chars = usize::from(name_len);
        if chars > MAX_PROC_NAME {
            return Err(CodecError::TooLong {
                what: "RPC procedure name",
                len: chars,
                max: MAX_PROC_NAME,
            });
        }
        let name = read_utf16_chars(cur, chars, "RPC procedure name")?;
        if name.is_empty() {
            return Err(CodecError::Invalid(
                "RPC with an empty procedure name".into(),
            ));
        }
        ProcRef::Name(name)
    };
    let flags = cur.u16_le("RPC OptionFlags")?;
    let mut params = Vec::new();
    loop {
        match cur.peek_u8() {
            None => {
                return Ok((
                    Rpc {
                        proc,
                        flags,
                        params,
                    },
                    None,
                ));
            }
            Some(BATCH_FLAG) => {
                cur.u8("batch flag")?;
                return Ok((
                    Rpc {
                        proc,
                        flags,
                        params,
                    },
                    Some(BATCH_FLAG),
                ));
            }
            Some(NO_EXEC_FLAG) => {
                return Err(CodecError::Invalid(
                    "RPC NoExec batch flag is not supported".into(),
                ));
            }
            Some(_) => {}
        }
        if params.len() == MAX_PARAMS {
            return Err(CodecError::TooLong {
                what: "RPC parameters",
                len: params.len() + 1,
                max: MAX_PARAMS,
            });
        }
        let name = read_b_varchar(cur, "RPC parameter name")?;
        let status = cur.u8("RPC parameter status")?;
        if status & param_status::ENCRYPTED != 0 {
            return Err(CodecError::Invalid(format!(
                "RPC parameter {name:?} is encrypted (Always Encrypted is not supported)"
            )));
        }
        let type_info = read_type_info(cur)?;
        let value = read_value(cur, &type_info, src)?;
        params.push(RpcParam {
            name,
            status,
            type_info,
            value,
        });
    }
}

/// Splits a multipart name (`server.db.schema.proc`) into its parts, unquoting `[..]` and
/// `".."` (with `]]` and `""` escapes) and trimming unquoted parts. More than four parts, an
/// unclosed quote, or text after a closing quote is an error.
pub fn split_multipart_name(name: &str) -> Result<Vec<String>> {
    let bad = || CodecError::Invalid(format!("malformed procedure name {name:?}"));
    let mut parts = Vec::new();
    let mut chars = name.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut part = String::new();
        match chars.peek().copied() {
            Some(open @ ('[' | '"')) => {
                let close = if open == '[' { ']' } else { '"' };
                chars.next();
                loop {
                    match chars.next() {
                        None => return Err(bad()),
                        Some(c) if c == close => {
                            if chars.peek() == Some(&close) {
                                chars.next();
                                part.push(close);
                            } else {
                                break;
                            }
                        }
                        Some(c) => part.push(c),
                    }
                }
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                if !matches!(chars.peek(), None | Some('.')) {
                    return Err(bad());
                }
            }
            _ => {
                while let Some(&c) = chars.peek() {
                    if c == '.' {
                        break;
                    }
                    if c == '[' || c == ']' || c == '"' {
                        return Err(bad());
                    }
                    part.push(c);
                    chars.next();
                }
                part = part.trim().to_owned();
            }
        }
        parts.push(part);
        // Otherwise the next char is the dot.
        if chars.next().is_none() {
            break;
        }
        if parts.len() == 4 {
            return Err(bad());
        }
    }
    Ok(parts)
}

impl Rpc {
    /// The system procedure this call runs, by ProcID or by name (`sp_executesql`,
    /// `sys.sp_executesql`, `dbo.sp_executesql`, `[sp_executesql]`, any case). A special
    /// name under another schema, in another database (`other..sp_executesql` runs its
    /// statement there) or on a linked server is refused.
    pub fn special(&self) -> Result<Option<SpecialProc>> {
        match &self.proc {
            ProcRef::Id(id) => SpecialProc::from_id(*id)
                .map(Some)
                .ok_or_else(|| CodecError::Invalid(format!("unknown RPC ProcID {id}"))),
            ProcRef::Name(name) => {
                let parts = split_multipart_name(name)?;
                let last = parts.last().map(String::as_str).unwrap_or_default();
                // A procedure number suffix (`proc;1`) still names the procedure, and SQL
                // Server compares names without their trailing blanks.
                let base = last.split(';').next().unwrap_or_default().trim_end();
                let Some(sp) = SpecialProc::from_name(base) else {
                    return Ok(None);
                };
                let part = |back: usize| {
                    parts
                        .len()
                        .checked_sub(back)
                        .and_then(|i| parts.get(i))
                        .map(String::as_str)
                        .unwrap_or_default()
                };
                let (schema, database) = (part(2), part(3));
                let plain_schema = schema.is_empty()
                    || schema.eq_ignore_ascii_case("sys")
                    || schema.eq_ignore_ascii_case("dbo");
                if parts.len() == 4 || !plain_schema || !database.is_empty() {
                    return Err(CodecError::Invalid(format!(
                        "procedure name {name:?} looks like {} but is qualified unusually",
                        sp.name()
                    )));
                }
                Ok(Some(sp))
            }
        }
    }

    /// The integer in the call's first parameter: the handle `sp_execute`, `sp_unprepare`,
    /// `sp_cursorexecute` and `sp_cursorunprepare` take. `None` when it is missing, NULL or
    /// not an integer (the target would convert it; the gateway does not guess).
    pub fn handle(&self) -> Option<i64> {
        match self.params.first()?.value {
            ParamValue::Int(h) => Some(h),
            _ => None,
        }
    }

    /// Whether the call's first parameter is an OUTPUT one: the target then returns its value
    /// in a RETURNVALUE of ordinal 0 (how `sp_prepare` and friends hand back their handle).
    pub fn first_param_is_output(&self) -> bool {
        self.params
            .first()
            .is_some_and(|p| p.status & param_status::BY_REF != 0)
    }

    /// The SQL text for sp_executesql, sp_prepare, sp_prepexec, sp_cursoropen,
    /// sp_cursorprepare and sp_cursorprepexec (by position, see `statement_index`); `None` for
    /// other calls. A missing, NULL or non-Unicode statement parameter is an error, as is
    /// sp_prepexecrpc (a procedure call the gateway does not unwrap).
    pub fn statement(&self) -> Result<Option<&str>> {
        let Some(sp) = self.special()? else {
            return Ok(None);
        };
        if sp == SpecialProc::PrepExecRpc {
            return Err(CodecError::Invalid(
                "sp_prepexecrpc is not supported".into(),
            ));
        }
        let Some(idx) = sp.statement_index() else {
            return Ok(None);
        };
        let p = self.params.get(idx).ok_or_else(|| {
            CodecError::Invalid(format!("{} without its statement parameter", sp.name()))
        })?;
        match &p.value {
            ParamValue::Text(s) if p.type_info.is_unicode_text() => Ok(Some(s)),
            _ => Err(CodecError::Invalid(format!(
                "{} statement parameter is not Unicode text",
                sp.name()
            ))),
        }
    }

    /// The procedure name as sent, for calls of an ordinary (not special) named procedure.
    pub fn procedure_name(&self) -> Result<Option<&str>> {
        match &self.proc {
            ProcRef::Name(name) if self.special()?.is_none() => Ok(Some(name)),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
#[path = "rpc_tests.rs"]
mod tests;
