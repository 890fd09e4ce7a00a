use super::*;

/// Latin1_General_CI_AS (LCID 0x0409, ignore case/width/kana, sort id 52).
const LATIN1: [u8; 5] = [0x09, 0x04, 0xD0, 0x00, 0x34];
/// Latin1_General_100_CI_AS_SC_UTF8: the fUTF8 bit (0x04000000) set.
const UTF8: [u8; 5] = [0x09, 0x04, 0xD0, 0x04, 0x00];

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// Reads TYPE_INFO then the value from `bytes`, which must be consumed exactly.
fn read(bytes: &[u8]) -> Result<(TypeInfo, ParamValue)> {
    let src = Bytes::copy_from_slice(bytes);
    let mut cur = Cursor::new(&src);
    let info = read_type_info(&mut cur)?;
    let v = read_value(&mut cur, &info, &src)?;
    assert!(cur.is_empty(), "{} bytes left", cur.remaining());
    Ok((info, v))
}

fn value(bytes: &[u8]) -> ParamValue {
    read(bytes).unwrap().1
}

#[test]
fn fixed_integers() {
    assert_eq!(value(&[ty::INT1, 0xFF]), ParamValue::Int(255));
    assert_eq!(value(&[ty::BIT, 0x01]), ParamValue::Int(1));
    assert_eq!(value(&[ty::INT2, 0xFE, 0xFF]), ParamValue::Int(-2));
    assert_eq!(value(&[ty::INT4, 0x2A, 0, 0, 0]), ParamValue::Int(42));
    let mut b = vec![ty::INT8];
    b.extend_from_slice(&i64::MIN.to_le_bytes());
    assert_eq!(value(&b), ParamValue::Int(i64::MIN));
    assert_eq!(value(&[ty::NULLTYPE]), ParamValue::Null);
}

#[test]
fn other_fixed_types_are_raw() {
    let mut b = vec![ty::FLT8];
    b.extend_from_slice(&1.5f64.to_le_bytes());
    assert_eq!(
        value(&b),
        ParamValue::Other(Bytes::copy_from_slice(&1.5f64.to_le_bytes()))
    );
    assert!(matches!(value(&[ty::DATETIM4, 1, 2, 3, 4]), ParamValue::Other(b) if b.len() == 4));
    assert!(matches!(
        value(&[ty::MONEY, 0, 0, 0, 0, 1, 0, 0, 0]),
        ParamValue::Other(_)
    ));
}

#[test]
fn nullable_integers() {
    assert_eq!(
        value(&[ty::INTN, 4, 4, 0xFF, 0xFF, 0xFF, 0xFF]),
        ParamValue::Int(-1)
    );
    assert_eq!(
        value(&[ty::INTN, 8, 2, 0x00, 0x80]),
        ParamValue::Int(-32768)
    );
    assert_eq!(value(&[ty::INTN, 4, 0]), ParamValue::Null);
    assert_eq!(value(&[ty::BITN, 1, 1, 0x00]), ParamValue::Int(0));
    assert_eq!(value(&[ty::BITN, 1, 0]), ParamValue::Null);
}

#[test]
fn nullable_fixed_width_types() {
    let mut guid = vec![ty::GUID, 16, 16];
    guid.extend_from_slice(&[0xAB; 16]);
    assert!(matches!(value(&guid), ParamValue::Other(b) if b.len() == 16));
    assert_eq!(value(&[ty::FLTN, 8, 0]), ParamValue::Null);
    assert!(matches!(
        value(&[ty::MONEYN, 8, 4, 1, 0, 0, 0]),
        ParamValue::Other(_)
    ));
    assert!(matches!(
        value(&[ty::DATETIMN, 8, 4, 1, 0, 0, 0]),
        ParamValue::Other(_)
    ));
}

#[test]
fn decimal_with_precision_and_scale() {
    let (info, v) = read(&[ty::DECIMALN, 17, 18, 4, 5, 1, 0x39, 0x30, 0, 0]).unwrap();
    assert_eq!((info.precision, info.scale, info.max_len), (18, 4, 17));
    assert!(matches!(v, ParamValue::Other(b) if b.len() == 5));
    assert_eq!(value(&[ty::NUMERICN, 17, 38, 0, 0]), ParamValue::Null);
    assert!(read(&[ty::DECIMALN, 17, 39, 0, 0]).is_err()); // precision > 38
    assert!(read(&[ty::DECIMALN, 17, 5, 6, 0]).is_err()); // scale > precision
    assert!(read(&[ty::DECIMALN, 17, 18, 0, 6, 1, 0, 0, 0, 0, 0]).is_err()); // 6-byte value
}

#[test]
fn date_and_time_types() {
    assert!(matches!(value(&[ty::DATEN, 3, 1, 2, 3]), ParamValue::Other(b) if b.len() == 3));
    assert_eq!(value(&[ty::DATEN, 0]), ParamValue::Null);
    let (info, _) = read(&[ty::TIMEN, 7, 5, 1, 2, 3, 4, 5]).unwrap();
    assert_eq!((info.scale, info.max_len), (7, 5));
    let (info, _) = read(&[ty::DATETIME2N, 3, 7, 1, 2, 3, 4, 5, 6, 7]).unwrap();
    assert_eq!(info.max_len, 7);
    let (info, v) = read(&[ty::DATETIMEOFFSETN, 0, 0]).unwrap();
    assert_eq!((info.max_len, v), (8, ParamValue::Null));
    assert!(read(&[ty::TIMEN, 8, 0]).is_err()); // scale 8
    assert!(read(&[ty::DATEN, 2, 1, 2]).is_err()); // 2-byte date
    assert!(read(&[ty::TIMEN, 7, 3, 1, 2, 3]).is_err()); // wrong width for scale 7
}

#[test]
fn nvarchar_text_and_null() {
    let mut b = vec![ty::NVARCHAR, 0x40, 0x1F];
    b.extend_from_slice(&LATIN1);
    let s = utf16("select * from t where id = @id");
    b.extend_from_slice(&u16::try_from(s.len()).unwrap().to_le_bytes());
    b.extend(s);
    let (info, v) = read(&b).unwrap();
    assert!(info.is_unicode_text());
    assert_eq!(info.collation, Some(LATIN1));
    assert_eq!(v, ParamValue::Text("select * from t where id = @id".into()));

    let mut b = vec![ty::NCHAR, 0x10, 0x00];
    b.extend_from_slice(&LATIN1);
    b.extend_from_slice(&[0xFF, 0xFF]);
    assert_eq!(value(&b), ParamValue::Null);
}

#[test]
fn nvarchar_with_lone_surrogate_is_raw_not_text() {
    let mut b = vec![ty::NVARCHAR, 0x10, 0x00];
    b.extend_from_slice(&LATIN1);
    b.extend_from_slice(&[2, 0, 0x00, 0xD8]);
    assert_eq!(
        value(&b),
        ParamValue::Other(Bytes::from_static(&[0x00, 0xD8]))
    );
}

#[test]
fn varchar_ascii_is_text_non_ascii_is_raw_unless_utf8() {
    let build = |coll: [u8; 5], data: &[u8]| {
        let mut b = vec![ty::BIGVARCHAR, 0x40, 0x1F];
        b.extend_from_slice(&coll);
        b.extend_from_slice(&u16::try_from(data.len()).unwrap().to_le_bytes());
        b.extend_from_slice(data);
        b
    };
    assert_eq!(
        value(&build(LATIN1, b"abc")),
        ParamValue::Text("abc".into())
    );
    // 0xE9 is é in code page 1252: not decoded without the code page.
    assert_eq!(
        value(&build(LATIN1, &[0x61, 0xE9])),
        ParamValue::Other(Bytes::from_static(&[0x61, 0xE9]))
    );
    assert_eq!(
        value(&build(UTF8, "é".as_bytes())),
        ParamValue::Text("é".into())
    );
    assert!(matches!(value(&build(UTF8, &[0xFF])), ParamValue::Other(_)));
}

#[test]
fn varbinary_and_binary() {
    let b = [ty::BIGVARBINARY, 0x40, 0x1F, 3, 0, 1, 2, 3];
    assert_eq!(value(&b), ParamValue::Other(Bytes::from_static(&[1, 2, 3])));
    let b = [ty::BIGBINARY, 4, 0, 0xFF, 0xFF];
    assert_eq!(value(&b), ParamValue::Null);
    // Value longer than the declared maximum.
    assert!(read(&[ty::BIGBINARY, 2, 0, 3, 0, 1, 2, 3]).is_err());
    // Declared maximum over 8000 without being MAX.
    assert!(read(&[ty::BIGVARBINARY, 0x41, 0x1F, 0, 0]).is_err());
    // BINARY(MAX) does not exist.
    assert!(read(&[ty::BIGBINARY, 0xFF, 0xFF, 0, 0]).is_err());
}

fn plp(code: u8, total: u64, chunks: &[&[u8]]) -> Vec<u8> {
    let mut b = vec![code, 0xFF, 0xFF];
    if code != ty::BIGVARBINARY {
        b.extend_from_slice(&LATIN1);
    }
    b.extend_from_slice(&total.to_le_bytes());
    for c in chunks {
        b.extend_from_slice(&u32::try_from(c.len()).unwrap().to_le_bytes());
        b.extend_from_slice(c);
    }
    if total != u64::MAX {
        b.extend_from_slice(&[0, 0, 0, 0]);
    }
    b
}

#[test]
fn nvarchar_max_as_plp_chunks() {
    let s = utf16("exec xp_cmdshell 'whoami'");
    let (a, rest) = s.split_at(10);
    let b = plp(ty::NVARCHAR, s.len() as u64, &[a, rest]);
    let (info, v) = read(&b).unwrap();
    assert_eq!(info.framing, Framing::Plp);
    assert_eq!(v, ParamValue::Text("exec xp_cmdshell 'whoami'".into()));
    // Unknown total length.
    let b = plp(ty::NVARCHAR, u64::MAX - 1, &[&s]);
    assert_eq!(
        value(&b),
        ParamValue::Text("exec xp_cmdshell 'whoami'".into())
    );
    // NULL.
    assert_eq!(value(&plp(ty::BIGVARCHAR, u64::MAX, &[])), ParamValue::Null);
    // Empty, known length 0: just the terminator.
    assert_eq!(
        value(&plp(ty::BIGVARBINARY, 0, &[])),
        ParamValue::Other(Bytes::new())
    );
}

#[test]
fn plp_malformed_refused() {
    let s = utf16("abc");
    // Declared total disagrees with the chunks.
    assert!(read(&plp(ty::NVARCHAR, 4, &[&s])).is_err());
    // Declared total beyond the payload.
    assert!(matches!(
        read(&plp(ty::NVARCHAR, 1 << 40, &[&s])),
        Err(CodecError::TooLong { .. })
    ));
    // Chunk length beyond the payload.
    let mut b = plp(ty::NVARCHAR, u64::MAX - 1, &[]);
    b.truncate(b.len() - 4);
    b.extend_from_slice(&0x7FFF_FFFFu32.to_le_bytes());
    assert!(read(&b).is_err());
    // Missing terminator.
    let mut b = plp(ty::NVARCHAR, 6, &[&s]);
    b.truncate(b.len() - 4);
    assert!(read(&b).is_err());
}

#[test]
fn ntext_text_image() {
    let mut b = vec![ty::NTEXT, 0xFF, 0xFF, 0xFF, 0x7F];
    b.extend_from_slice(&LATIN1);
    let s = utf16("select 1");
    b.extend_from_slice(&u32::try_from(s.len()).unwrap().to_le_bytes());
    b.extend(s);
    assert_eq!(value(&b), ParamValue::Text("select 1".into()));
    let mut b = vec![ty::TEXT, 0xFF, 0xFF, 0xFF, 0x7F];
    b.extend_from_slice(&LATIN1);
    b.extend_from_slice(&[0xFF; 4]);
    assert_eq!(value(&b), ParamValue::Null);
    let b = [ty::IMAGE, 0xFF, 0xFF, 0xFF, 0x7F, 2, 0, 0, 0, 9, 9];
    assert_eq!(value(&b), ParamValue::Other(Bytes::from_static(&[9, 9])));
    let b = [ty::IMAGE, 0xFF, 0xFF, 0xFF, 0x7F, 0xFE, 0xFF, 0xFF, 0xFF, 9];
    assert!(read(&b).is_err());
}

#[test]
fn xml_untyped_and_typed() {
    let mut b = vec![ty::XML, 0];
    b.extend_from_slice(&2u64.to_le_bytes());
    b.extend_from_slice(&[2, 0, 0, 0, b'<', 0, 0, 0, 0, 0]);
    assert!(matches!(value(&b), ParamValue::Other(x) if x.len() == 2));
    let mut b = vec![ty::XML, 1, 2, b'd', 0, b'b', 0, 1, b's', 0, 1, 0, b'c', 0];
    b.extend_from_slice(&u64::MAX.to_le_bytes());
    let (info, v) = read(&b).unwrap();
    assert_eq!(v, ParamValue::Null);
    let schema = info.xml_schema.unwrap();
    assert_eq!(
        (
            schema.database.as_str(),
            schema.owning_schema.as_str(),
            schema.collection.as_str()
        ),
        ("db", "s", "c")
    );
    assert!(read(&[ty::XML, 2]).is_err());
}

#[test]
fn sql_variant() {
    let b = [
        ty::SSVARIANT,
        0x49,
        0x1F,
        0,
        0,
        6,
        0,
        0,
        0,
        0x38,
        0,
        1,
        0,
        0,
        0,
    ];
    assert!(matches!(value(&b), ParamValue::Other(x) if x.len() == 6));
    let b = [ty::SSVARIANT, 0x49, 0x1F, 0, 0, 0, 0, 0, 0];
    assert_eq!(value(&b), ParamValue::Null);
    assert!(read(&[ty::SSVARIANT, 0x4A, 0x1F, 0, 0, 0, 0, 0, 0]).is_err());
}

#[test]
fn unsupported_types_named_in_the_error() {
    for (code, name) in [
        (0xF0, "UDT"),
        (0xF3, "TABLE"),
        (0x27, "legacy"),
        (0x2F, "legacy"),
        (0x37, "legacy"),
        (0x99, "unknown"),
    ] {
        let err = read(&[code, 1, 0, 0]).unwrap_err();
        assert!(
            matches!(&err, CodecError::Invalid(m) if m.contains(name)),
            "{err:?}"
        );
    }
}

#[test]
fn bad_nullable_lengths_refused() {
    assert!(read(&[ty::INTN, 3, 0]).is_err());
    assert!(read(&[ty::INTN, 4, 3, 1, 2, 3]).is_err());
    assert!(read(&[ty::INTN, 2, 4, 1, 2, 3, 4]).is_err()); // over declared max
    assert!(read(&[ty::GUID, 8, 0]).is_err());
    assert!(read(&[ty::BITN, 2, 0]).is_err());
    assert!(read(&[ty::FLTN, 8, 2, 0, 0]).is_err());
    // Truncated everywhere.
    assert!(read(&[ty::INT4, 1, 2]).is_err());
    assert!(read(&[ty::NVARCHAR, 0x10]).is_err());
    assert!(read(&[]).is_err());
}
