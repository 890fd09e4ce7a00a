//! COLMETADATA (MS-TDS 2.2.7.4) and RETURNVALUE (2.2.7.18): the descriptions rows and output
//! parameters are read against.

use std::ops::Range;

use super::CodecError;
use super::tokenbuf::{Rd, Step, Stop};
use super::types::{TypeInfo, read_type_info};
use super::values::read_value;

/// Column flag: the column may hold NULL.
pub const FLAG_NULLABLE: u16 = 0x0001;
/// Column flag: Always Encrypted ciphertext with CryptoMetaData (not supported).
pub const FLAG_ENCRYPTED: u16 = 0x0800;

/// Column count that means "no metadata, the client cached it" (fNoMetaData in the RPC).
const NO_METADATA: u16 = 0xFFFF;

/// One result column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub user_type: u32,
    pub flags: u16,
    pub type_info: TypeInfo,
    /// Base table name parts, only sent for TEXT/NTEXT/IMAGE columns.
    pub table_name: Vec<String>,
    pub name: String,
}

impl Column {
    pub fn is_nullable(&self) -> bool {
        self.flags & FLAG_NULLABLE != 0
    }
}

/// The columns of the current result set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ColMetadata {
    pub columns: Vec<Column>,
}

impl ColMetadata {
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// Whether any column can hold character data, i.e. whether masking has anything to look at.
    pub fn has_text(&self) -> bool {
        self.columns.iter().any(|c| c.type_info.may_hold_text())
    }
}

fn unsupported(what: &str) -> Stop {
    Stop::Bad(CodecError::Invalid(format!("{what} is not supported")))
}

/// What a COLMETADATA token holds.
pub(crate) enum Parsed {
    Columns(ColMetadata),
    NoMetadata,
}

/// Reads a COLMETADATA after its token byte. With `build` false only the extent is found (names
/// are skipped, nothing is kept), which is how a token still arriving is measured.
pub(crate) fn read_colmetadata(
    rd: &mut Rd<'_>,
    column_encryption: bool,
    build: bool,
) -> Step<Parsed> {
    let count = rd.u16()?;
    if count == NO_METADATA {
        return Ok(Parsed::NoMetadata);
    }
    if column_encryption {
        // The CEK table would follow the count; the gateway strips the feature instead.
        return Err(unsupported(
            "COLMETADATA with a column encryption key table",
        ));
    }
    let mut columns = Vec::new();
    for _ in 0..count {
        let user_type = rd.u32()?;
        let flags = rd.u16()?;
        if flags & FLAG_ENCRYPTED != 0 {
            return Err(unsupported("an Always Encrypted column"));
        }
        let type_info = read_type_info(rd)?;
        let mut table_name = Vec::new();
        if type_info.is_long_text() {
            let parts = rd.u8()?;
            for _ in 0..parts {
                if build {
                    table_name.push(rd.us_varchar()?);
                } else {
                    rd.skip_us_varchar()?;
                }
            }
        }
        if build {
            let name = rd.b_varchar()?;
            columns.push(Column {
                user_type,
                flags,
                type_info,
                table_name,
                name,
            });
        } else {
            rd.skip_b_varchar()?;
        }
    }
    Ok(Parsed::Columns(ColMetadata { columns }))
}

/// An output parameter or UDF return value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReturnValue {
    pub ordinal: u16,
    pub name: String,
    /// 0x01 output parameter, 0x02 UDF return value.
    pub status: u8,
    pub user_type: u32,
    pub flags: u16,
    pub type_info: TypeInfo,
    /// Where the value (length prefix included) sits in the token.
    pub value: Range<usize>,
}

/// RETURNVALUE status: the value of an OUTPUT parameter of the RPC.
pub const RETURN_OUTPUT: u8 = 0x01;

impl ReturnValue {
    /// The value as an integer, when it is a non-NULL TINYINT, SMALLINT, INT or BIGINT
    /// (fixed or nullable); `token` is the whole RETURNVALUE token it was read from.
    pub fn int_value(&self, token: &[u8]) -> Option<i64> {
        use super::types::DataType::*;
        let raw = token.get(self.value.clone())?;
        let data = match self.type_info.data_type {
            Int1 | Int2 | Int4 | Int8 => raw,
            IntN => {
                let (&n, rest) = raw.split_first()?;
                rest.get(..usize::from(n))
                    .filter(|d| d.len() == rest.len())?
            }
            _ => return None,
        };
        Some(match *data {
            [b] => i64::from(b),
            [a, b] => i64::from(i16::from_le_bytes([a, b])),
            [a, b, c, d] => i64::from(i32::from_le_bytes([a, b, c, d])),
            [a, b, c, d, e, f, g, h] => i64::from_le_bytes([a, b, c, d, e, f, g, h]),
            _ => return None,
        })
    }
}

/// Reads the RETURNVALUE token at the start of `buf`; returns it and the token length.
pub(crate) fn read_return_value(buf: &[u8], limit: usize) -> Step<(ReturnValue, usize)> {
    let mut rd = Rd::at(buf, 1);
    let ordinal = rd.u16()?;
    let name = rd.b_varchar()?;
    let status = rd.u8()?;
    let user_type = rd.u32()?;
    let flags = rd.u16()?;
    if flags & FLAG_ENCRYPTED != 0 {
        return Err(unsupported("an Always Encrypted return value"));
    }
    let type_info = read_type_info(&mut rd)?;
    if type_info.is_long_text() {
        // TEXT/NTEXT/IMAGE cannot be OUTPUT parameters of T-SQL procedures.
        return Err(unsupported("a TEXT/NTEXT/IMAGE return value"));
    }
    let start = rd.pos();
    let (_, end) = read_value(buf, start, &type_info, limit, &mut None)?;
    let rv = ReturnValue {
        ordinal,
        name,
        status,
        user_type,
        flags,
        type_info,
        value: start..end,
    };
    Ok((rv, end))
}
