//! Rows written by this server, read back by the gateway's own token reader (an independent
//! implementation of MS-TDS), compared with SQL Server's byte layouts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::BytesMut;
use proxy_tds::codec::tokens::{StreamState, Token, next_token};
use proxy_tds::codec::types::DataType;
use proxy_tds::codec::values::{RowValues, ValueData};

use super::*;
use crate::columns::{Column, put_colmetadata};

/// Write COLMETADATA and one row, read both back; the values as the reader sees them.
fn round_trip(kinds: &[ColKind], values: &[Option<&str>]) -> (Vec<DataType>, Vec<Vec<u8>>, u8) {
    let columns: Vec<Column> = kinds
        .iter()
        .enumerate()
        .map(|(i, k)| Column {
            name: format!("c{i}"),
            kind: *k,
        })
        .collect();
    let mut out = BytesMut::new();
    put_colmetadata(&mut out, &columns);
    let raw: Vec<Option<&[u8]>> = values.iter().map(|v| v.map(str::as_bytes)).collect();
    put_row(&mut out, kinds, &raw).unwrap();
    let mut state = StreamState::new();
    let (tok, used) = next_token(&out, &mut state).unwrap().unwrap();
    let Token::ColMetadata(meta) = tok else {
        panic!("{tok:?}")
    };
    let types = meta.columns.iter().map(|c| c.type_info.data_type).collect();
    let row = &out[used..];
    let (tok, len) = next_token(row, &mut state).unwrap().unwrap();
    assert!(matches!(tok, Token::Row | Token::NbcRow));
    assert_eq!(len, row.len(), "the row is exactly one token");
    let values = RowValues::new(row, &meta)
        .unwrap()
        .map(|v| match v.unwrap().data {
            ValueData::Null => b"NULL".to_vec(),
            ValueData::Bytes(b) => b.to_vec(),
            ValueData::Plp(p) => p.chunks().flatten().copied().collect(),
            other => panic!("{other:?}"),
        })
        .collect();
    (types, values, row[0])
}

#[test]
fn scalar_values_have_sql_servers_byte_layouts() {
    let kinds = [
        ColKind::Int(2),
        ColKind::Int(4),
        ColKind::Int(8),
        ColKind::Float(8),
        ColKind::Float(4),
        ColKind::Bit,
        ColKind::Numeric {
            precision: 10,
            scale: 2,
        },
        ColKind::Guid,
    ];
    let (types, v, token) = round_trip(
        &kinds,
        &[
            Some("-2"),
            Some("42"),
            Some("-9000000000"),
            Some("1.5"),
            Some("0.1"),
            Some("t"),
            Some("-123.45"),
            Some("6f9619ff-8b86-d011-b42d-00c04fc964ff"),
        ],
    );
    assert_eq!(token, 0xD1);
    use DataType::*;
    assert_eq!(
        types,
        [IntN, IntN, IntN, FltN, FltN, BitN, NumericN, Guid].to_vec()
    );
    assert_eq!(v[0], (-2i16).to_le_bytes());
    assert_eq!(v[1], 42i32.to_le_bytes());
    assert_eq!(v[2], (-9_000_000_000i64).to_le_bytes());
    assert_eq!(v[3], 1.5f64.to_le_bytes());
    assert_eq!(v[4], 0.1f32.to_le_bytes());
    assert_eq!(v[5], [1]);
    // NUMERIC(10,2) -123.45: sign 0 (negative), 12345 in eight bytes.
    let mut n = vec![0u8];
    n.extend_from_slice(&12345u64.to_le_bytes());
    assert_eq!(v[6], n);
    // The GUID SQL Server's documentation shows as 0xFF19966F868B11D0B42D00C04FC964FF.
    assert_eq!(
        v[7],
        [
            0xFF, 0x19, 0x96, 0x6F, 0x86, 0x8B, 0x11, 0xD0, 0xB4, 0x2D, 0x00, 0xC0, 0x4F, 0xC9,
            0x64, 0xFF
        ]
    );
}

#[test]
fn dates_and_times_count_from_year_one() {
    let kinds = [
        ColKind::Date,
        ColKind::DateTime2 { scale: 6 },
        ColKind::DateTimeOffset { scale: 6 },
        ColKind::DateTime2 { scale: 0 },
    ];
    let (types, v, _) = round_trip(
        &kinds,
        &[
            Some("1900-01-01"),
            Some("2024-03-01 12:34:56.789"),
            Some("2024-03-01 00:30:00+01"),
            Some("9999-12-31 23:59:59"),
        ],
    );
    use DataType::*;
    assert_eq!(
        types,
        [DateN, DateTime2N, DateTimeOffsetN, DateTime2N].to_vec()
    );
    // 1900-01-01 is day 693595.
    assert_eq!(v[0], 693_595u32.to_le_bytes()[..3]);
    let mut dt2 = 45_296_789_000u64.to_le_bytes()[..5].to_vec();
    dt2.extend_from_slice(&738_945u32.to_le_bytes()[..3]);
    assert_eq!(v[1], dt2);
    // Stored in UTC (23:30 the day before) with the offset, +60 minutes.
    let mut dto = 84_600_000_000u64.to_le_bytes()[..5].to_vec();
    dto.extend_from_slice(&738_944u32.to_le_bytes()[..3]);
    dto.extend_from_slice(&60i16.to_le_bytes());
    assert_eq!(v[2], dto);
    let mut max = 86_399u32.to_le_bytes()[..3].to_vec();
    max.extend_from_slice(&3_652_058u32.to_le_bytes()[..3]);
    assert_eq!(v[3], max);
}

#[test]
fn long_text_and_bytes_go_in_plp_chunks_and_nulls_in_a_bitmap_when_shorter() {
    let long: String = "é€😀abc".repeat(3000);
    let kinds = [
        ColKind::NVarChar,
        ColKind::NVarCharMax,
        ColKind::VarBinaryMax,
        ColKind::NVarCharMax,
        ColKind::Int(4),
    ];
    let (types, v, token) = round_trip(
        &kinds,
        &[Some("Ada"), Some(&long), Some("\\x00ff10"), None, None],
    );
    assert_eq!(token, 0xD2, "NULL MAX columns cost more than a bitmap");
    assert_eq!(types[1], DataType::NVarChar);
    assert_eq!(types[2], DataType::BigVarBinary);
    let utf16 = |s: &str| -> Vec<u8> { s.encode_utf16().flat_map(u16::to_le_bytes).collect() };
    assert_eq!(v[0], utf16("Ada"));
    assert_eq!(v[1], utf16(&long));
    assert!(v[1].len() > 2 * PLP_CHUNK, "several chunks");
    assert_eq!(v[2], [0x00, 0xFF, 0x10]);
    assert_eq!(v[3], b"NULL");
    assert_eq!(v[4], b"NULL");
    // One NULL INT costs a byte, as would the bitmap: a plain ROW.
    let (_, v, token) = round_trip(&[ColKind::Int(4), ColKind::NVarChar], &[None, Some("")]);
    assert_eq!(token, 0xD1);
    assert_eq!(v, [b"NULL".to_vec(), Vec::new()]);
}

#[test]
fn values_without_a_tds_form_are_errors_and_leave_nothing_behind() {
    let mut out = BytesMut::from(&b"kept"[..]);
    for (kind, text) in [
        (ColKind::Date, "0044-03-15 BC"),
        (ColKind::DateTime2 { scale: 6 }, "infinity"),
        (
            ColKind::Numeric {
                precision: 5,
                scale: 2,
            },
            "NaN",
        ),
        (
            ColKind::Numeric {
                precision: 3,
                scale: 0,
            },
            "1000",
        ),
        (ColKind::Int(2), "70000"),
        (ColKind::Guid, "not-a-uuid"),
        (ColKind::VarBinaryMax, "\\x0"),
        (ColKind::NVarChar, &"x".repeat(4001)),
    ] {
        assert!(
            put_value(&mut out, kind, text.as_bytes()).is_err(),
            "{kind:?} {text}"
        );
        assert_eq!(&out[..], b"kept");
    }
    assert!(
        put_row(
            &mut out,
            &[ColKind::Int(4), ColKind::Date],
            &[Some(b"1"), Some(b"x")]
        )
        .is_err()
    );
    assert_eq!(&out[..], b"kept");
}
