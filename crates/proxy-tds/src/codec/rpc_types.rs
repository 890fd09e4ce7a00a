//! Just enough of TYPE_INFO and TYPE_VARBYTE to walk RPC parameters: find where each value
//! ends, and decode integers and text. Types the gateway does not know (UDT, table-valued
//! parameters, the pre-7.0 CHAR/VARCHAR/BINARY/VARBINARY/DECIMAL/NUMERIC forms, JSON, VECTOR)
//! are an error naming the type, so the RPC is refused rather than mis-read.

use bytes::Bytes;

use super::cursor::{Cursor, bounded};
use super::text::{self, read_b_varchar, read_us_varchar};
use super::{CodecError, Result};

/// Data type codes.
pub mod ty {
    pub const NULLTYPE: u8 = 0x1F;
    pub const INT1: u8 = 0x30;
    pub const BIT: u8 = 0x32;
    pub const INT2: u8 = 0x34;
    pub const INT4: u8 = 0x38;
    pub const DATETIM4: u8 = 0x3A;
    pub const FLT4: u8 = 0x3B;
    pub const MONEY: u8 = 0x3C;
    pub const DATETIME: u8 = 0x3D;
    pub const FLT8: u8 = 0x3E;
    pub const MONEY4: u8 = 0x7A;
    pub const INT8: u8 = 0x7F;
    pub const GUID: u8 = 0x24;
    pub const INTN: u8 = 0x26;
    pub const DATEN: u8 = 0x28;
    pub const TIMEN: u8 = 0x29;
    pub const DATETIME2N: u8 = 0x2A;
    pub const DATETIMEOFFSETN: u8 = 0x2B;
    pub const BITN: u8 = 0x68;
    pub const DECIMALN: u8 = 0x6A;
    pub const NUMERICN: u8 = 0x6C;
    pub const FLTN: u8 = 0x6D;
    pub const MONEYN: u8 = 0x6E;
    pub const DATETIMN: u8 = 0x6F;
    pub const BIGVARBINARY: u8 = 0xA5;
    pub const BIGVARCHAR: u8 = 0xA7;
    pub const BIGBINARY: u8 = 0xAD;
    pub const BIGCHAR: u8 = 0xAF;
    pub const NVARCHAR: u8 = 0xE7;
    pub const NCHAR: u8 = 0xEF;
    pub const XML: u8 = 0xF1;
    pub const IMAGE: u8 = 0x22;
    pub const TEXT: u8 = 0x23;
    pub const SSVARIANT: u8 = 0x62;
    pub const NTEXT: u8 = 0x63;
}

/// Largest non-MAX length of a USHORTLEN type (varchar(8000), nvarchar(4000)).
pub const MAX_USHORT_TYPE_LEN: u16 = 8000;
/// USHORTLEN maximum that marks a MAX type (sent as PLP).
pub const USHORT_MAX_MARKER: u16 = 0xFFFF;
/// Largest sql_variant.
pub const MAX_VARIANT_LEN: u32 = 8009;
const PLP_NULL: u64 = u64::MAX;
const PLP_UNKNOWN_LEN: u64 = u64::MAX - 1;
const COLLATION_UTF8: u32 = 0x0400_0000;

/// How a value of the type is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly `max_len` bytes, never NULL.
    Fixed,
    /// A length byte; 0 is NULL.
    ByteLen,
    /// A u16 length; 0xFFFF is NULL.
    UShortLen,
    /// A u32 length; 0xFFFFFFFF is NULL (TEXT, NTEXT, IMAGE).
    LongLen,
    /// Partially length-prefixed: u64 total, then u32-length chunks ended by a 0 chunk.
    Plp,
    /// sql_variant: a u32 length; 0 is NULL.
    Variant,
}

/// XML schema collection a typed XML parameter is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlSchema {
    pub database: String,
    pub owning_schema: String,
    pub collection: String,
}

/// A parameter's TYPE_INFO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeInfo {
    pub code: u8,
    pub framing: Framing,
    /// Declared maximum value length in bytes (the size itself for fixed types).
    pub max_len: u32,
    /// DECIMALN / NUMERICN.
    pub precision: u8,
    /// DECIMALN / NUMERICN / TIMEN / DATETIME2N / DATETIMEOFFSETN.
    pub scale: u8,
    pub collation: Option<[u8; 5]>,
    pub xml_schema: Option<XmlSchema>,
}

/// A parameter value, decoded where the gateway needs it decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamValue {
    Null,
    /// NVARCHAR/NCHAR/NTEXT that is valid UTF-16, or VARCHAR/CHAR/TEXT that is ASCII (or valid
    /// UTF-8 under a UTF-8 collation).
    Text(String),
    /// TINYINT (unsigned), SMALLINT, INT, BIGINT, BIT.
    Int(i64),
    /// Anything else: the value bytes (PLP chunks joined), without the length prefix.
    Other(Bytes),
}

impl TypeInfo {
    /// The Unicode character types (what a statement parameter must be).
    pub fn is_unicode_text(&self) -> bool {
        matches!(self.code, ty::NVARCHAR | ty::NCHAR | ty::NTEXT)
    }

    fn simple(code: u8, framing: Framing, max_len: u32) -> Self {
        TypeInfo {
            code,
            framing,
            max_len,
            precision: 0,
            scale: 0,
            collation: None,
            xml_schema: None,
        }
    }
}

fn invalid(code: u8, why: &str) -> CodecError {
    CodecError::Invalid(format!(
        "RPC parameter type {} (0x{code:02X}): {why}",
        type_name(code)
    ))
}

/// A name for a type code, for error messages.
pub fn type_name(code: u8) -> &'static str {
    match code {
        ty::NULLTYPE => "NULL",
        ty::INT1 => "TINYINT",
        ty::BIT => "BIT",
        ty::INT2 => "SMALLINT",
        ty::INT4 => "INT",
        ty::DATETIM4 => "SMALLDATETIME",
        ty::FLT4 => "REAL",
        ty::MONEY => "MONEY",
        ty::DATETIME => "DATETIME",
        ty::FLT8 => "FLOAT",
        ty::MONEY4 => "SMALLMONEY",
        ty::INT8 => "BIGINT",
        ty::GUID => "UNIQUEIDENTIFIER",
        ty::INTN => "INTN",
        ty::DATEN => "DATE",
        ty::TIMEN => "TIME",
        ty::DATETIME2N => "DATETIME2",
        ty::DATETIMEOFFSETN => "DATETIMEOFFSET",
        ty::BITN => "BITN",
        ty::DECIMALN => "DECIMAL",
        ty::NUMERICN => "NUMERIC",
        ty::FLTN => "FLTN",
        ty::MONEYN => "MONEYN",
        ty::DATETIMN => "DATETIMN",
        ty::BIGVARBINARY => "VARBINARY",
        ty::BIGVARCHAR => "VARCHAR",
        ty::BIGBINARY => "BINARY",
        ty::BIGCHAR => "CHAR",
        ty::NVARCHAR => "NVARCHAR",
        ty::NCHAR => "NCHAR",
        ty::XML => "XML",
        ty::IMAGE => "IMAGE",
        ty::TEXT => "TEXT",
        ty::SSVARIANT => "SQL_VARIANT",
        ty::NTEXT => "NTEXT",
        0xF0 => "UDT",
        0xF3 => "TABLE (TVP)",
        0x2F | 0x27 | 0x2D | 0x25 | 0x37 | 0x3F => "legacy pre-TDS 7 type",
        _ => "unknown",
    }
}

/// TIME's byte length for a fractional-second scale.
fn time_len(scale: u8) -> u32 {
    match scale {
        0..=2 => 3,
        3..=4 => 4,
        _ => 5,
    }
}

/// Reads a TYPE_INFO.
pub fn read_type_info(cur: &mut Cursor<'_>) -> Result<TypeInfo> {
    let code = cur.u8("TYPE_INFO")?;
    let info = match code {
        ty::NULLTYPE => TypeInfo::simple(code, Framing::Fixed, 0),
        ty::INT1 | ty::BIT => TypeInfo::simple(code, Framing::Fixed, 1),
        ty::INT2 => TypeInfo::simple(code, Framing::Fixed, 2),
        ty::INT4 | ty::DATETIM4 | ty::FLT4 | ty::MONEY4 => {
            TypeInfo::simple(code, Framing::Fixed, 4)
        }
        ty::MONEY | ty::DATETIME | ty::FLT8 | ty::INT8 => TypeInfo::simple(code, Framing::Fixed, 8),
        ty::GUID | ty::INTN | ty::BITN | ty::FLTN | ty::MONEYN | ty::DATETIMN => {
            let max = cur.u8("TYPE_INFO length")?;
            let ok: &[u8] = match code {
                ty::GUID => &[16],
                ty::INTN => &[1, 2, 4, 8],
                ty::BITN => &[1],
                _ => &[4, 8],
            };
            if !ok.contains(&max) {
                return Err(invalid(code, &format!("length {max}")));
            }
            TypeInfo::simple(code, Framing::ByteLen, u32::from(max))
        }
        ty::DECIMALN | ty::NUMERICN => {
            let max = cur.u8("TYPE_INFO length")?;
            let precision = cur.u8("TYPE_INFO precision")?;
            let scale = cur.u8("TYPE_INFO scale")?;
            if ![5, 9, 13, 17].contains(&max) || !(1..=38).contains(&precision) || scale > precision
            {
                return Err(invalid(
                    code,
                    &format!("length {max} precision {precision} scale {scale}"),
                ));
            }
            TypeInfo {
                precision,
                scale,
                ..TypeInfo::simple(code, Framing::ByteLen, u32::from(max))
            }
        }
        ty::DATEN => TypeInfo::simple(code, Framing::ByteLen, 3),
        ty::TIMEN | ty::DATETIME2N | ty::DATETIMEOFFSETN => {
            let scale = cur.u8("TYPE_INFO scale")?;
            if scale > 7 {
                return Err(invalid(code, &format!("scale {scale}")));
            }
            let extra = match code {
                ty::TIMEN => 0,
                ty::DATETIME2N => 3,
                _ => 5,
            };
            TypeInfo {
                scale,
                ..TypeInfo::simple(code, Framing::ByteLen, time_len(scale) + extra)
            }
        }
        ty::BIGVARBINARY
        | ty::BIGVARCHAR
        | ty::BIGBINARY
        | ty::BIGCHAR
        | ty::NVARCHAR
        | ty::NCHAR => {
            let max = cur.u16_le("TYPE_INFO length")?;
            let can_be_max = matches!(code, ty::BIGVARBINARY | ty::BIGVARCHAR | ty::NVARCHAR);
            let framing = if max == USHORT_MAX_MARKER && can_be_max {
                Framing::Plp
            } else if max <= MAX_USHORT_TYPE_LEN {
                Framing::UShortLen
            } else {
                return Err(invalid(code, &format!("length {max}")));
            };
            let collation = match code {
                ty::BIGVARBINARY | ty::BIGBINARY => None,
                _ => Some(cur.array("collation")?),
            };
            TypeInfo {
                collation,
                ..TypeInfo::simple(code, framing, u32::from(max))
            }
        }
        ty::TEXT | ty::NTEXT | ty::IMAGE => {
            let max = cur.u32_le("TYPE_INFO length")?;
            let collation = match code {
                ty::IMAGE => None,
                _ => Some(cur.array("collation")?),
            };
            TypeInfo {
                collation,
                ..TypeInfo::simple(code, Framing::LongLen, max)
            }
        }
        ty::XML => {
            let xml_schema = match cur.u8("XML schema present")? {
                0 => None,
                1 => Some(XmlSchema {
                    database: read_b_varchar(cur, "XML schema database")?,
                    owning_schema: read_b_varchar(cur, "XML owning schema")?,
                    collection: read_us_varchar(cur, "XML schema collection", 4000)?,
                }),
                other => return Err(invalid(code, &format!("schema-present byte {other}"))),
            };
            TypeInfo {
                xml_schema,
                ..TypeInfo::simple(code, Framing::Plp, u32::MAX)
            }
        }
        ty::SSVARIANT => {
            let max = cur.u32_le("TYPE_INFO length")?;
            if max > MAX_VARIANT_LEN {
                return Err(invalid(code, &format!("length {max}")));
            }
            TypeInfo::simple(code, Framing::Variant, max)
        }
        other => return Err(invalid(other, "not supported by the gateway")),
    };
    Ok(info)
}

/// Whether a non-NULL value of `n` bytes is a valid size for the type.
fn valid_len(info: &TypeInfo, n: usize) -> bool {
    let max = usize::try_from(info.max_len).unwrap_or(usize::MAX);
    match info.code {
        ty::INTN => matches!(n, 1 | 2 | 4 | 8) && n <= max,
        ty::FLTN | ty::MONEYN | ty::DATETIMN => matches!(n, 4 | 8) && n <= max,
        ty::DECIMALN | ty::NUMERICN => matches!(n, 5 | 9 | 13 | 17) && n <= max,
        ty::GUID | ty::BITN | ty::DATEN | ty::TIMEN | ty::DATETIME2N | ty::DATETIMEOFFSETN => {
            n == max
        }
        _ => n <= max,
    }
}

fn int_value(code: u8, b: &[u8]) -> Option<i64> {
    Some(match (code, b.len()) {
        (ty::BIT | ty::BITN, 1) => i64::from(b[0] != 0),
        (ty::INT1 | ty::INTN, 1) => i64::from(b[0]),
        (ty::INT2 | ty::INTN, 2) => i64::from(i16::from_le_bytes([b[0], b[1]])),
        (ty::INT4 | ty::INTN, 4) => i64::from(i32::from_le_bytes(b.try_into().ok()?)),
        (ty::INT8 | ty::INTN, 8) => i64::from_le_bytes(b.try_into().ok()?),
        _ => return None,
    })
}

/// Decodes value bytes of a known length.
fn decode(info: &TypeInfo, data: Bytes) -> ParamValue {
    if let Some(i) = int_value(info.code, &data) {
        return ParamValue::Int(i);
    }
    match info.code {
        // A lone surrogate is legal in SQL Server data: shown as raw bytes, not refused here.
        // A statement parameter must be Text, so such a statement is still refused.
        ty::NVARCHAR | ty::NCHAR | ty::NTEXT => match text::decode(&data, "parameter") {
            Ok(s) => ParamValue::Text(s),
            Err(_) => ParamValue::Other(data),
        },
        ty::BIGVARCHAR | ty::BIGCHAR | ty::TEXT => {
            let utf8_collation = info.collation.is_some_and(|c| {
                u32::from_le_bytes([c[0], c[1], c[2], c[3]]) & COLLATION_UTF8 != 0
            });
            match std::str::from_utf8(&data) {
                Ok(s) if data.is_ascii() || utf8_collation => ParamValue::Text(s.to_owned()),
                _ => ParamValue::Other(data),
            }
        }
        _ => ParamValue::Other(data),
    }
}

fn read_plp(cur: &mut Cursor<'_>) -> Result<Option<Vec<u8>>> {
    let total = cur.u64_le("PLP length")?;
    if total == PLP_NULL {
        return Ok(None);
    }
    let known = match total {
        PLP_UNKNOWN_LEN => None,
        n => Some(bounded("PLP value", n, cur.remaining())?),
    };
    let mut data = Vec::with_capacity(known.unwrap_or(0));
    loop {
        let n = bounded(
            "PLP chunk",
            u64::from(cur.u32_le("PLP chunk length")?),
            cur.remaining(),
        )?;
        if n == 0 {
            break;
        }
        data.extend_from_slice(cur.take(n, "PLP chunk")?);
    }
    if let Some(k) = known.filter(|k| *k != data.len()) {
        return Err(CodecError::Invalid(format!(
            "PLP value declares {k} bytes but its chunks hold {}",
            data.len()
        )));
    }
    Ok(Some(data))
}

/// Reads a value of type `info` at the cursor. `src` is the buffer the cursor reads, so that
/// raw values share its memory.
pub fn read_value(cur: &mut Cursor<'_>, info: &TypeInfo, src: &Bytes) -> Result<ParamValue> {
    let take = |cur: &mut Cursor<'_>, n: usize| -> Result<Bytes> {
        if !valid_len(info, n) {
            return Err(invalid(info.code, &format!("value of {n} bytes")));
        }
        Ok(src.slice_ref(cur.take(n, "parameter value")?))
    };
    let data = match info.framing {
        Framing::Fixed if info.code == ty::NULLTYPE => return Ok(ParamValue::Null),
        Framing::Fixed => take(cur, info.max_len as usize)?,
        Framing::ByteLen => match cur.u8("value length")? {
            0 => return Ok(ParamValue::Null),
            n => take(cur, usize::from(n))?,
        },
        Framing::UShortLen => match cur.u16_le("value length")? {
            0xFFFF => return Ok(ParamValue::Null),
            n => take(cur, usize::from(n))?,
        },
        Framing::LongLen => match cur.u32_le("value length")? {
            u32::MAX => return Ok(ParamValue::Null),
            n => {
                let n = bounded("parameter value", u64::from(n), cur.remaining())?;
                take(cur, n)?
            }
        },
        Framing::Variant => match cur.u32_le("value length")? {
            0 => return Ok(ParamValue::Null),
            n => take(
                cur,
                bounded("parameter value", u64::from(n), cur.remaining())?,
            )?,
        },
        Framing::Plp => match read_plp(cur)? {
            None => return Ok(ParamValue::Null),
            Some(v) => Bytes::from(v),
        },
    };
    Ok(decode(info, data))
}

#[cfg(test)]
#[path = "rpc_types_tests.rs"]
mod tests;
