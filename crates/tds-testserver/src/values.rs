//! Column values: PostgreSQL's text form of a value written as TDS carries it in a ROW.
//! Values with no TDS form (a date before year 1, NaN in a NUMERIC column) are errors, never
//! approximations.

use bytes::{BufMut, BytesMut};

use crate::columns::ColKind;
use crate::datetime::{self, Date};

/// Bytes per PLP chunk (even, so a chunk of UTF-16 never ends inside a code unit).
pub const PLP_CHUNK: usize = 8000;
/// Longest NVARCHAR(4000) value, in UTF-16 units.
const NVARCHAR_UNITS: usize = 4000;

/// Why a value could not be written.
pub type ValueError = String;

fn text(raw: &[u8]) -> Result<&str, ValueError> {
    std::str::from_utf8(raw).map_err(|_| "PostgreSQL sent a value that is not UTF-8".to_string())
}

/// Append the NULL of `kind`.
pub fn put_null(out: &mut BytesMut, kind: ColKind) {
    match kind {
        ColKind::NVarChar => out.put_u16_le(0xFFFF),
        ColKind::NVarCharMax | ColKind::VarBinaryMax => out.put_u64_le(u64::MAX),
        _ => out.put_u8(0),
    }
}

/// Append the value whose PostgreSQL text form is `raw`, as `kind`. On error nothing is
/// appended.
pub fn put_value(out: &mut BytesMut, kind: ColKind, raw: &[u8]) -> Result<(), ValueError> {
    let start = out.len();
    let r = put_value_inner(out, kind, raw);
    if r.is_err() {
        out.truncate(start);
    }
    r
}

fn put_value_inner(out: &mut BytesMut, kind: ColKind, raw: &[u8]) -> Result<(), ValueError> {
    match kind {
        ColKind::Int(n) => {
            let s = text(raw)?;
            let v: i64 = s.parse().map_err(|_| format!("{s:?} is not an integer"))?;
            out.put_u8(n);
            match n {
                2 => out.put_i16_le(i16::try_from(v).map_err(|_| format!("{v} is not an int2"))?),
                4 => out.put_i32_le(i32::try_from(v).map_err(|_| format!("{v} is not an int4"))?),
                _ => out.put_i64_le(v),
            }
        }
        ColKind::Float(n) => {
            let s = text(raw)?;
            let v = parse_float(s)?;
            out.put_u8(n);
            if n == 4 {
                // PostgreSQL printed a float4: the nearest f32 is the value it holds.
                out.put_f32_le(v as f32);
            } else {
                out.put_f64_le(v);
            }
        }
        ColKind::Bit => {
            out.put_u8(1);
            out.put_u8(match raw {
                b"t" => 1,
                b"f" => 0,
                _ => return Err(format!("{:?} is not a boolean", text(raw)?)),
            });
        }
        ColKind::Numeric { precision, scale } => put_numeric(out, text(raw)?, precision, scale)?,
        ColKind::Date => {
            let d = datetime::parse_date(text(raw)?)?;
            out.put_u8(3);
            put_days(out, d);
        }
        ColKind::DateTime2 { scale } => {
            let (d, micros) = datetime::parse_timestamp(text(raw)?)?;
            out.put_u8(ColKind::time_len(scale) + 3);
            put_time(out, micros, scale);
            put_days(out, d);
        }
        ColKind::DateTimeOffset { scale } => {
            let (d, micros, offset) = datetime::parse_timestamptz(text(raw)?)?;
            out.put_u8(ColKind::time_len(scale) + 5);
            put_time(out, micros, scale);
            put_days(out, d);
            out.put_i16_le(offset);
        }
        ColKind::Guid => {
            let s = text(raw)?;
            let hex: Vec<u8> = s.bytes().filter(|b| *b != b'-').collect();
            let b = decode_hex(&hex).filter(|b| b.len() == 16);
            let b = b.ok_or_else(|| format!("{s:?} is not a uuid"))?;
            out.put_u8(16);
            // The first three groups little-endian, as SQL Server lays out a GUID.
            out.put_slice(&[b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6]]);
            out.put_slice(&b[8..]);
        }
        ColKind::NVarChar => {
            let s = text(raw)?;
            let units = s.encode_utf16().count();
            if units > NVARCHAR_UNITS {
                return Err(format!(
                    "a value of {units} characters does not fit NVARCHAR(4000)"
                ));
            }
            out.put_u16_le((units * 2) as u16);
            put_utf16(out, s);
        }
        ColKind::NVarCharMax => {
            let s = text(raw)?;
            let len = s.encode_utf16().count() * 2;
            out.put_u64_le(len as u64);
            let mut units = s.encode_utf16();
            let mut left = len;
            while left > 0 {
                let chunk = left.min(PLP_CHUNK);
                out.put_u32_le(chunk as u32);
                for u in units.by_ref().take(chunk / 2) {
                    out.put_u16_le(u);
                }
                left -= chunk;
            }
            out.put_u32_le(0);
        }
        ColKind::VarBinaryMax => {
            let hex = raw
                .strip_prefix(b"\\x")
                .ok_or("PostgreSQL sent bytea not in hex form")?;
            if hex.len() % 2 != 0 {
                return Err("odd number of hex digits in bytea".into());
            }
            let len = hex.len() / 2;
            out.put_u64_le(len as u64);
            for chunk in hex.chunks(PLP_CHUNK * 2) {
                out.put_u32_le((chunk.len() / 2) as u32);
                let bytes = decode_hex(chunk).ok_or("bad hex digit in bytea")?;
                out.put_slice(&bytes);
            }
            out.put_u32_le(0);
        }
    }
    Ok(())
}

fn parse_float(s: &str) -> Result<f64, ValueError> {
    match s {
        "NaN" => Ok(f64::NAN),
        "Infinity" => Ok(f64::INFINITY),
        "-Infinity" => Ok(f64::NEG_INFINITY),
        _ => s.parse().map_err(|_| format!("{s:?} is not a number")),
    }
}

fn put_utf16(out: &mut BytesMut, s: &str) {
    for u in s.encode_utf16() {
        out.put_u16_le(u);
    }
}

fn put_days(out: &mut BytesMut, d: Date) {
    // 0..=3652058 fits three bytes.
    let days = datetime::days_since_year_one(d) as u32;
    out.put_slice(&days.to_le_bytes()[..3]);
}

fn put_time(out: &mut BytesMut, micros: u64, scale: u8) {
    let units = micros / 10u64.pow(6u32.saturating_sub(u32::from(scale)));
    let n = usize::from(ColKind::time_len(scale));
    out.put_slice(&units.to_le_bytes()[..n]);
}

fn decode_hex(hex: &[u8]) -> Option<Vec<u8>> {
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    hex.chunks(2)
        .map(|p| match p {
            [h, l] => Some(nibble(*h)? << 4 | nibble(*l)?),
            _ => None,
        })
        .collect()
}

/// `-123.45` in a NUMERIC(p, s) column: sign byte, then the magnitude scaled by 10^s,
/// little-endian, in the width `p` calls for.
fn put_numeric(out: &mut BytesMut, s: &str, precision: u8, scale: u8) -> Result<(), ValueError> {
    let bad = || format!("{s:?} has no NUMERIC({precision}, {scale}) form");
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !all_digits(int) || !all_digits(frac) || frac.len() > usize::from(scale) {
        return Err(bad());
    }
    let mut magnitude: u128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        magnitude = magnitude
            .checked_mul(10)
            .and_then(|m| m.checked_add(u128::from(b - b'0')))
            .ok_or_else(bad)?;
    }
    for _ in frac.len()..usize::from(scale) {
        magnitude = magnitude.checked_mul(10).ok_or_else(bad)?;
    }
    if magnitude >= 10u128.pow(u32::from(precision)) {
        return Err(bad());
    }
    let len = ColKind::numeric_len(precision);
    out.put_u8(len);
    out.put_u8(u8::from(!negative || magnitude == 0));
    out.put_slice(&magnitude.to_le_bytes()[..usize::from(len) - 1]);
    Ok(())
}

/// Append one row of `values` (PostgreSQL text forms, `None` for NULL) for `kinds`: an NBCROW
/// when its null bitmap is shorter than the NULLs it replaces, else a ROW. On error nothing
/// is appended.
pub fn put_row(
    out: &mut BytesMut,
    kinds: &[ColKind],
    values: &[Option<&[u8]>],
) -> Result<(), ValueError> {
    if kinds.len() != values.len() {
        return Err(format!(
            "{} values for {} columns",
            values.len(),
            kinds.len()
        ));
    }
    let bitmap_len = kinds.len().div_ceil(8);
    let null_bytes: usize = kinds
        .iter()
        .zip(values)
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| k.null_len())
        .sum();
    let start = out.len();
    let nbc = null_bytes > bitmap_len;
    if nbc {
        out.put_u8(0xD2);
        let mut bitmap = vec![0u8; bitmap_len];
        for (i, v) in values.iter().enumerate() {
            if v.is_none() {
                bitmap[i / 8] |= 1 << (i % 8);
            }
        }
        out.put_slice(&bitmap);
    } else {
        out.put_u8(0xD1);
    }
    for (kind, value) in kinds.iter().zip(values) {
        let r = match value {
            Some(raw) => put_value(out, *kind, raw),
            None if nbc => Ok(()),
            None => {
                put_null(out, *kind);
                Ok(())
            }
        };
        if let Err(e) = r {
            out.truncate(start);
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "values_tests.rs"]
mod tests;
