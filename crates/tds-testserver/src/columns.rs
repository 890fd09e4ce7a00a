//! Result columns: which TDS type each PostgreSQL column is sent as, and the COLMETADATA
//! token that describes them.
//!
//! | PostgreSQL | TDS |
//! |---|---|
//! | int2, int4, int8 | INTN(2, 4, 8) |
//! | float4, float8 | FLTN(4, 8) |
//! | numeric(p, s), p ≤ 38, s ≥ 0 | NUMERICN(p, s) |
//! | numeric without a precision, or p > 38 | NVARCHAR(MAX), PostgreSQL's text |
//! | bool | BITN |
//! | char(n), varchar(n) with n ≤ 2000, name, "char" | NVARCHAR(4000) |
//! | text, longer or unbounded char/varchar | NVARCHAR(MAX) (PLP, chunked) |
//! | bytea | VARBINARY(MAX) |
//! | date | DATEN |
//! | timestamp(p) | DATETIME2N(p), p = 6 without one |
//! | timestamptz(p) | DATETIMEOFFSETN(p) |
//! | uuid | GUID |
//! | time, timetz, interval, inet, cidr, macaddr, money, oid | NVARCHAR(4000), PostgreSQL's text |
//! | anything else | NVARCHAR(MAX), PostgreSQL's text |
//!
//! Every column is sent as nullable: PostgreSQL's row description does not say.

use bytes::BufMut;

/// A column's type as this server sends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColKind {
    /// INTN of 2, 4 or 8 bytes.
    Int(u8),
    /// FLTN of 4 or 8 bytes.
    Float(u8),
    Bit,
    Numeric {
        precision: u8,
        scale: u8,
    },
    Date,
    DateTime2 {
        scale: u8,
    },
    DateTimeOffset {
        scale: u8,
    },
    Guid,
    /// NVARCHAR(4000): values of at most 4000 UTF-16 units.
    NVarChar,
    /// NVARCHAR(MAX), sent as PLP chunks.
    NVarCharMax,
    /// VARBINARY(MAX), sent as PLP chunks.
    VarBinaryMax,
}

/// PostgreSQL type OIDs this server maps to a TDS type of their own.
mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const CIDR: u32 = 650;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const MONEY: u32 = 790;
    pub const MACADDR: u32 = 829;
    pub const INET: u32 = 869;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const TIMETZ: u32 = 1266;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
}

/// A varchar(n)/char(n) whose values fit NVARCHAR(4000) even if every character takes two
/// UTF-16 units.
const SHORT_CHARS: i32 = 2000;
/// PostgreSQL's typmod carries a 4-byte header length for character and numeric types.
const VARHDRSZ: i32 = 4;

/// The scale of a timestamp(p) column (6 when it has none).
fn time_scale(typmod: i32) -> u8 {
    u8::try_from(typmod).ok().filter(|p| *p <= 6).unwrap_or(6)
}

impl ColKind {
    /// How a column of PostgreSQL type `oid` with modifier `typmod` is sent.
    pub fn for_pg(type_oid: u32, typmod: i32) -> ColKind {
        use ColKind::*;
        match type_oid {
            oid::INT2 => Int(2),
            oid::INT4 => Int(4),
            oid::INT8 => Int(8),
            oid::FLOAT4 => Float(4),
            oid::FLOAT8 => Float(8),
            oid::BOOL => Bit,
            oid::NUMERIC if typmod >= VARHDRSZ => {
                let m = typmod - VARHDRSZ;
                let precision = (m >> 16) & 0xFFFF;
                // The scale is an 11-bit signed field since PostgreSQL 15.
                let raw = m & 0x7FF;
                let scale = if raw & 0x400 != 0 { raw - 0x800 } else { raw };
                match (u8::try_from(precision), u8::try_from(scale)) {
                    (Ok(p), Ok(s)) if (1..=38).contains(&p) && s <= p => Numeric {
                        precision: p,
                        scale: s,
                    },
                    _ => NVarCharMax,
                }
            }
            oid::BPCHAR | oid::VARCHAR
                if typmod >= VARHDRSZ && typmod - VARHDRSZ <= SHORT_CHARS =>
            {
                NVarChar
            }
            oid::NAME | oid::CHAR => NVarChar,
            oid::BYTEA => VarBinaryMax,
            oid::DATE => Date,
            oid::TIMESTAMP => DateTime2 {
                scale: time_scale(typmod),
            },
            oid::TIMESTAMPTZ => DateTimeOffset {
                scale: time_scale(typmod),
            },
            oid::UUID => Guid,
            oid::TIME
            | oid::TIMETZ
            | oid::INTERVAL
            | oid::INET
            | oid::CIDR
            | oid::MACADDR
            | oid::MONEY
            | oid::OID => NVarChar,
            oid::TEXT => NVarCharMax,
            _ => NVarCharMax,
        }
    }

    /// Bytes a NULL of this type takes in a ROW (what an NBCROW bitmap saves).
    pub fn null_len(self) -> usize {
        match self {
            ColKind::NVarChar => 2,
            ColKind::NVarCharMax | ColKind::VarBinaryMax => 8,
            _ => 1,
        }
    }

    /// Bytes of a DECIMALN/NUMERICN value (sign byte included) for `precision`.
    pub fn numeric_len(precision: u8) -> u8 {
        match precision {
            0..=9 => 5,
            10..=19 => 9,
            20..=28 => 13,
            _ => 17,
        }
    }

    /// Bytes of the time part of TIMEN/DATETIME2N/DATETIMEOFFSETN at `scale`.
    pub fn time_len(scale: u8) -> u8 {
        match scale {
            0..=2 => 3,
            3..=4 => 4,
            _ => 5,
        }
    }
}

/// SQL_Latin1_General_CP1_CI_AS, the collation stated for NVARCHAR columns.
pub const COLLATION: [u8; 5] = [0x09, 0x04, 0xD0, 0x00, 0x34];

/// Column flags: nullable, updatability unknown.
const FLAGS: u16 = 0x0001 | 0x0008;

/// Longest column name sent, in UTF-16 units (a B_VARCHAR holds 255).
const MAX_NAME: usize = 128;

/// Append a TYPE_INFO for `kind`.
pub fn put_type_info(out: &mut impl BufMut, kind: ColKind) {
    match kind {
        ColKind::Int(n) => out.put_slice(&[0x26, n]),
        ColKind::Float(n) => out.put_slice(&[0x6D, n]),
        ColKind::Bit => out.put_slice(&[0x68, 1]),
        ColKind::Numeric { precision, scale } => {
            out.put_slice(&[0x6C, ColKind::numeric_len(precision), precision, scale])
        }
        ColKind::Date => out.put_u8(0x28),
        ColKind::DateTime2 { scale } => out.put_slice(&[0x2A, scale]),
        ColKind::DateTimeOffset { scale } => out.put_slice(&[0x2B, scale]),
        ColKind::Guid => out.put_slice(&[0x24, 16]),
        ColKind::NVarChar => {
            out.put_u8(0xE7);
            out.put_u16_le(8000);
            out.put_slice(&COLLATION);
        }
        ColKind::NVarCharMax => {
            out.put_u8(0xE7);
            out.put_u16_le(0xFFFF);
            out.put_slice(&COLLATION);
        }
        ColKind::VarBinaryMax => {
            out.put_u8(0xA5);
            out.put_u16_le(0xFFFF);
        }
    }
}

/// One column of a result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub kind: ColKind,
}

/// Append a COLMETADATA token for `columns` (at most 0xFFFE of them; PostgreSQL allows 1664).
pub fn put_colmetadata(out: &mut impl BufMut, columns: &[Column]) {
    out.put_u8(0x81);
    out.put_u16_le(u16::try_from(columns.len()).unwrap_or(0xFFFE));
    for c in columns.iter().take(0xFFFE) {
        out.put_u32_le(0);
        out.put_u16_le(FLAGS);
        put_type_info(out, c.kind);
        let units: Vec<u16> = c.name.encode_utf16().take(MAX_NAME).collect();
        out.put_u8(units.len() as u8);
        for u in units {
            out.put_u16_le(u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_types_map_as_documented() {
        assert_eq!(ColKind::for_pg(oid::INT8, -1), ColKind::Int(8));
        assert_eq!(
            ColKind::for_pg(oid::NUMERIC, ((10 << 16) | 2) + 4),
            ColKind::Numeric {
                precision: 10,
                scale: 2
            }
        );
        assert_eq!(ColKind::for_pg(oid::NUMERIC, -1), ColKind::NVarCharMax);
        assert_eq!(
            ColKind::for_pg(oid::NUMERIC, ((50 << 16) | 2) + 4),
            ColKind::NVarCharMax
        );
        // numeric(3, -2): a negative scale has no TDS form.
        assert_eq!(
            ColKind::for_pg(oid::NUMERIC, ((3 << 16) | 0x7FE) + 4),
            ColKind::NVarCharMax
        );
        assert_eq!(ColKind::for_pg(oid::VARCHAR, 2000 + 4), ColKind::NVarChar);
        assert_eq!(
            ColKind::for_pg(oid::VARCHAR, 2001 + 4),
            ColKind::NVarCharMax
        );
        assert_eq!(ColKind::for_pg(oid::VARCHAR, -1), ColKind::NVarCharMax);
        assert_eq!(
            ColKind::for_pg(oid::TIMESTAMP, 3),
            ColKind::DateTime2 { scale: 3 }
        );
        assert_eq!(
            ColKind::for_pg(oid::TIMESTAMPTZ, -1),
            ColKind::DateTimeOffset { scale: 6 }
        );
        // jsonb, arrays, anything unknown: text.
        assert_eq!(ColKind::for_pg(3802, -1), ColKind::NVarCharMax);
        assert_eq!(ColKind::for_pg(oid::INTERVAL, -1), ColKind::NVarChar);
    }
}
