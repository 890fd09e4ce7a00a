//! TYPE_INFO (MS-TDS 2.2.5.6): what a column's values look like on the wire — how their length
//! is encoded and, for character data, which encoding the bytes are in.

use super::CodecError;
use super::tokenbuf::{Rd, Step, Stop, need_more};

/// The TDS data types a result column can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    Null,
    Int1,
    Bit,
    Int2,
    Int4,
    DateTim4,
    Flt4,
    Money,
    DateTime,
    Flt8,
    Money4,
    Int8,
    Guid,
    IntN,
    Decimal,
    Numeric,
    BitN,
    DecimalN,
    NumericN,
    FltN,
    MoneyN,
    DateTimeN,
    DateN,
    TimeN,
    DateTime2N,
    DateTimeOffsetN,
    BigVarBinary,
    BigVarChar,
    BigBinary,
    BigChar,
    NVarChar,
    NChar,
    Text,
    NText,
    Image,
    Xml,
    Udt,
    Variant,
}

impl DataType {
    /// Maps a type byte; legacy (pre-7.0) and not yet supported types (JSON, VECTOR) are refused.
    pub fn from_code(code: u8) -> Result<Self, CodecError> {
        use DataType::*;
        Ok(match code {
            0x1F => Null,
            0x30 => Int1,
            0x32 => Bit,
            0x34 => Int2,
            0x38 => Int4,
            0x3A => DateTim4,
            0x3B => Flt4,
            0x3C => Money,
            0x3D => DateTime,
            0x3E => Flt8,
            0x7A => Money4,
            0x7F => Int8,
            0x24 => Guid,
            0x26 => IntN,
            0x37 => Decimal,
            0x3F => Numeric,
            0x68 => BitN,
            0x6A => DecimalN,
            0x6C => NumericN,
            0x6D => FltN,
            0x6E => MoneyN,
            0x6F => DateTimeN,
            0x28 => DateN,
            0x29 => TimeN,
            0x2A => DateTime2N,
            0x2B => DateTimeOffsetN,
            0xA5 => BigVarBinary,
            0xA7 => BigVarChar,
            0xAD => BigBinary,
            0xAF => BigChar,
            0xE7 => NVarChar,
            0xEF => NChar,
            0x23 => Text,
            0x63 => NText,
            0x22 => Image,
            0xF1 => Xml,
            0xF0 => Udt,
            0x62 => Variant,
            0xF4 => return Err(unsupported("JSON")),
            0xF5 => return Err(unsupported("VECTOR")),
            0x25 | 0x27 | 0x2D | 0x2F => {
                return Err(unsupported("legacy 1-byte-length char/binary"));
            }
            other => {
                return Err(CodecError::Invalid(format!(
                    "unknown data type 0x{other:02X}"
                )));
            }
        })
    }

    /// The type byte on the wire.
    pub fn code(self) -> u8 {
        use DataType::*;
        match self {
            Null => 0x1F,
            Int1 => 0x30,
            Bit => 0x32,
            Int2 => 0x34,
            Int4 => 0x38,
            DateTim4 => 0x3A,
            Flt4 => 0x3B,
            Money => 0x3C,
            DateTime => 0x3D,
            Flt8 => 0x3E,
            Money4 => 0x7A,
            Int8 => 0x7F,
            Guid => 0x24,
            IntN => 0x26,
            Decimal => 0x37,
            Numeric => 0x3F,
            BitN => 0x68,
            DecimalN => 0x6A,
            NumericN => 0x6C,
            FltN => 0x6D,
            MoneyN => 0x6E,
            DateTimeN => 0x6F,
            DateN => 0x28,
            TimeN => 0x29,
            DateTime2N => 0x2A,
            DateTimeOffsetN => 0x2B,
            BigVarBinary => 0xA5,
            BigVarChar => 0xA7,
            BigBinary => 0xAD,
            BigChar => 0xAF,
            NVarChar => 0xE7,
            NChar => 0xEF,
            Text => 0x23,
            NText => 0x63,
            Image => 0x22,
            Xml => 0xF1,
            Udt => 0xF0,
            Variant => 0x62,
        }
    }
}

fn unsupported(what: &str) -> CodecError {
    CodecError::Invalid(format!("{what} data type is not supported"))
}

/// How a value's length is encoded in a ROW.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LengthKind {
    /// Always exactly this many bytes, no prefix.
    Fixed(u8),
    /// One length byte; 0 is NULL.
    ByteLen,
    /// Two length bytes; 0xFFFF is NULL.
    UShortLen,
    /// TEXT/NTEXT/IMAGE: a B_VARBYTE text pointer (empty = NULL), an 8-byte timestamp, then
    /// four length bytes and the data.
    LongLen,
    /// Partially length-prefixed: u64 total (all ones = NULL), chunks, a zero-length terminator.
    Plp,
    /// SQL_VARIANT: four length bytes (0 = NULL), then base type, property bytes and data.
    Variant,
}

/// The encoding of character data, as the gateway treats it for masking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CharEncoding {
    /// N-types and XML: UTF-16LE.
    Utf16,
    /// VARCHAR/CHAR/TEXT under a `_UTF8` collation.
    Utf8,
    /// VARCHAR/CHAR/TEXT under any other collation: a Windows code page the gateway does not
    /// translate. ASCII bytes are read as ASCII; other bytes are carried through unchanged.
    CodePage(CodePage),
}

/// Enough about a code page to keep its characters whole without the full code page table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodePage {
    /// Every byte is one character (1250-1258, 437, 850, ...).
    SingleByte,
    /// Shift-JIS (932): lead bytes 0x81-0x9F and 0xE0-0xFC take the next byte with them.
    ShiftJis,
    /// 936, 949, 950: lead bytes 0x81-0xFE take the next byte with them.
    DoubleByte,
}

impl CodePage {
    /// Whether `b` starts a two-byte character.
    pub fn is_lead(self, b: u8) -> bool {
        match self {
            CodePage::SingleByte => false,
            CodePage::ShiftJis => matches!(b, 0x81..=0x9F | 0xE0..=0xFC),
            CodePage::DoubleByte => matches!(b, 0x81..=0xFE),
        }
    }
}

/// The 5-byte COLLATION (MS-TDS 2.2.5.1.2), kept as received.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Collation(pub [u8; 5]);

impl Collation {
    fn info(&self) -> u32 {
        u32::from_le_bytes([self.0[0], self.0[1], self.0[2], self.0[3]])
    }

    /// Windows locale id (20 bits).
    pub fn lcid(&self) -> u32 {
        self.info() & 0x000F_FFFF
    }

    /// ColFlags: ignore case/accent/kana/width, binary, binary2, UTF-8 (bits 0-6).
    pub fn flags(&self) -> u8 {
        // masked to 8 bits, so the cast keeps every bit
        ((self.info() >> 20) & 0xFF) as u8
    }

    /// The collation stores VARCHAR data as UTF-8.
    pub fn is_utf8(&self) -> bool {
        self.flags() & 0x40 != 0
    }

    /// SQL sort order id; 0 for Windows collations.
    pub fn sort_id(&self) -> u8 {
        self.0[4]
    }

    /// How VARCHAR/CHAR/TEXT bytes under this collation are to be read.
    pub fn encoding(&self) -> CharEncoding {
        if self.is_utf8() {
            return CharEncoding::Utf8;
        }
        // The primary language of the LCID picks the East Asian double-byte code pages.
        CharEncoding::CodePage(match self.lcid() & 0x3FF {
            0x11 => CodePage::ShiftJis,
            0x04 | 0x12 => CodePage::DoubleByte,
            _ => CodePage::SingleByte,
        })
    }
}

/// XML_INFO when a schema collection is bound to the column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XmlSchema {
    pub database: String,
    pub owning_schema: String,
    pub collection: String,
}

/// UDT_INFO as sent in COLMETADATA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdtInfo {
    pub max_byte_size: u16,
    pub database: String,
    pub schema: String,
    pub type_name: String,
    pub assembly_qualified_name: String,
}

/// Declared length for values with no upper bound (MAX types, XML, large UDTs).
pub const UNBOUNDED: u32 = u32::MAX;

/// A parsed TYPE_INFO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeInfo {
    pub data_type: DataType,
    pub length: LengthKind,
    /// Declared maximum length in bytes (the fixed size for fixed types, [`UNBOUNDED`] for PLP).
    pub max_len: u32,
    pub precision: u8,
    pub scale: u8,
    /// Present for BIGCHAR, BIGVARCHAR, TEXT, NCHAR, NVARCHAR, NTEXT.
    pub collation: Option<Collation>,
    pub xml_schema: Option<Box<XmlSchema>>,
    pub udt: Option<Box<UdtInfo>>,
}

impl TypeInfo {
    fn new(data_type: DataType, length: LengthKind, max_len: u32) -> Self {
        Self {
            data_type,
            length,
            max_len,
            precision: 0,
            scale: 0,
            collation: None,
            xml_schema: None,
            udt: None,
        }
    }

    /// Parses one TYPE_INFO at the start of `buf`; `Ok(None)` if `buf` ends inside it.
    /// Returns the type and the number of bytes it took.
    pub fn parse(buf: &[u8]) -> super::Result<Option<(TypeInfo, usize)>> {
        let mut rd = Rd::new(buf);
        need_more(read_type_info(&mut rd).map(|t| (t, rd.pos())))
    }

    /// The encoding of this column's values if they are character data. SQL_VARIANT is decided
    /// per value (see [`variant_char_encoding`]) and returns `None` here.
    pub fn char_encoding(&self) -> Option<CharEncoding> {
        use DataType::*;
        match self.data_type {
            NVarChar | NChar | NText | Xml => Some(CharEncoding::Utf16),
            BigVarChar | BigChar | Text => self.collation.map(|c| c.encoding()),
            _ => None,
        }
    }

    /// Character data the masking callback sees (including SQL_VARIANT, which may hold it).
    pub fn may_hold_text(&self) -> bool {
        self.char_encoding().is_some() || self.data_type == DataType::Variant
    }

    /// CHAR(n)/NCHAR(n): values are blank-padded to the declared length.
    pub fn is_blank_padded(&self) -> bool {
        matches!(self.data_type, DataType::BigChar | DataType::NChar)
    }

    /// TEXT, NTEXT and IMAGE carry their table name in COLMETADATA and a text pointer in rows.
    pub fn is_long_text(&self) -> bool {
        self.length == LengthKind::LongLen
    }
}

/// The character encoding of an SQL_VARIANT value of `base_type` with property bytes `props`.
pub fn variant_char_encoding(base_type: u8, props: &[u8]) -> Option<CharEncoding> {
    match base_type {
        0xE7 | 0xEF => Some(CharEncoding::Utf16),
        0xA7 | 0xAF => {
            let c: [u8; 5] = props.get(..5)?.try_into().ok()?;
            Some(Collation(c).encoding())
        }
        _ => None,
    }
}

/// The longest non-MAX CHAR/VARCHAR/BINARY/VARBINARY/NCHAR/NVARCHAR, in bytes.
const MAX_SHORT_LEN: u16 = 8000;
/// USHORTMAXLEN that marks a MAX (PLP) column.
const PLP_MARKER: u16 = 0xFFFF;

fn bad(why: String) -> Stop {
    Stop::Bad(CodecError::Invalid(why))
}

/// Reads a TYPE_INFO as it appears in COLMETADATA and RETURNVALUE.
pub(crate) fn read_type_info(rd: &mut Rd<'_>) -> Step<TypeInfo> {
    use DataType::*;
    let dt = DataType::from_code(rd.u8()?)?;
    let fixed = |n: u8| Ok(TypeInfo::new(dt, LengthKind::Fixed(n), u32::from(n)));
    match dt {
        Null => fixed(0),
        Int1 | Bit => fixed(1),
        Int2 => fixed(2),
        Int4 | DateTim4 | Flt4 | Money4 => fixed(4),
        Money | DateTime | Flt8 | Int8 => fixed(8),
        Guid | IntN | BitN | FltN | MoneyN | DateTimeN => {
            let n = rd.u8()?;
            let ok = match dt {
                Guid => n == 16,
                IntN => matches!(n, 1 | 2 | 4 | 8),
                BitN => n == 1,
                _ => matches!(n, 4 | 8),
            };
            if !ok {
                return Err(bad(format!("{dt:?} declared with length {n}")));
            }
            Ok(TypeInfo::new(dt, LengthKind::ByteLen, u32::from(n)))
        }
        Decimal | Numeric | DecimalN | NumericN => {
            let n = rd.u8()?;
            let mut t = TypeInfo::new(dt, LengthKind::ByteLen, u32::from(n));
            t.precision = rd.u8()?;
            t.scale = rd.u8()?;
            if !matches!(n, 5 | 9 | 13 | 17)
                || !(1..=38).contains(&t.precision)
                || t.scale > t.precision
            {
                return Err(bad(format!(
                    "{dt:?} declared with length {n}, precision {}, scale {}",
                    t.precision, t.scale
                )));
            }
            Ok(t)
        }
        DateN => Ok(TypeInfo::new(dt, LengthKind::ByteLen, 3)),
        TimeN | DateTime2N | DateTimeOffsetN => {
            let scale = rd.u8()?;
            if scale > 7 {
                return Err(bad(format!("{dt:?} declared with scale {scale}")));
            }
            // time is 3 to 5 bytes by scale; datetime2 adds a 3-byte date, datetimeoffset 5 bytes
            let time = match scale {
                0..=2 => 3,
                3..=4 => 4,
                _ => 5,
            };
            let extra = match dt {
                TimeN => 0,
                DateTime2N => 3,
                _ => 5,
            };
            let mut t = TypeInfo::new(dt, LengthKind::ByteLen, time + extra);
            t.scale = scale;
            Ok(t)
        }
        BigVarBinary | BigBinary | BigVarChar | BigChar | NVarChar | NChar => {
            let n = rd.u16()?;
            let collation = match dt {
                BigVarChar | BigChar | NVarChar | NChar => Some(Collation(rd.bytes5()?)),
                _ => None,
            };
            let can_be_max = matches!(dt, BigVarBinary | BigVarChar | NVarChar);
            let mut t = if n == PLP_MARKER && can_be_max {
                TypeInfo::new(dt, LengthKind::Plp, UNBOUNDED)
            } else if n <= MAX_SHORT_LEN {
                TypeInfo::new(dt, LengthKind::UShortLen, u32::from(n))
            } else {
                return Err(bad(format!("{dt:?} declared with length {n}")));
            };
            t.collation = collation;
            Ok(t)
        }
        Text | NText | Image => {
            let n = rd.u32()?;
            let mut t = TypeInfo::new(dt, LengthKind::LongLen, n);
            if dt != Image {
                t.collation = Some(Collation(rd.bytes5()?));
            }
            Ok(t)
        }
        Xml => {
            let mut t = TypeInfo::new(dt, LengthKind::Plp, UNBOUNDED);
            match rd.u8()? {
                0 => {}
                1 => {
                    t.xml_schema = Some(Box::new(XmlSchema {
                        database: rd.b_varchar()?,
                        owning_schema: rd.b_varchar()?,
                        collection: rd.us_varchar()?,
                    }))
                }
                other => return Err(bad(format!("XML SCHEMA_PRESENT is {other}"))),
            }
            Ok(t)
        }
        Udt => {
            let max_byte_size = rd.u16()?;
            let udt = UdtInfo {
                max_byte_size,
                database: rd.b_varchar()?,
                schema: rd.b_varchar()?,
                type_name: rd.b_varchar()?,
                assembly_qualified_name: rd.us_varchar()?,
            };
            let max = if max_byte_size == PLP_MARKER {
                UNBOUNDED
            } else {
                u32::from(max_byte_size)
            };
            let mut t = TypeInfo::new(dt, LengthKind::Plp, max);
            t.udt = Some(Box::new(udt));
            Ok(t)
        }
        Variant => {
            let n = rd.u32()?;
            Ok(TypeInfo::new(dt, LengthKind::Variant, n))
        }
    }
}

#[cfg(test)]
#[path = "types_tests.rs"]
mod tests;
