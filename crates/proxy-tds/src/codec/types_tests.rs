use super::*;

const LATIN1: [u8; 5] = [0x09, 0x04, 0xD0, 0x00, 0x34];

fn parse(bytes: &[u8]) -> TypeInfo {
    let (t, used) = TypeInfo::parse(bytes).unwrap().unwrap();
    assert_eq!(used, bytes.len(), "whole TYPE_INFO consumed");
    t
}

#[test]
fn fixed_length_types() {
    for (code, n) in [
        (0x1F, 0),
        (0x30, 1),
        (0x32, 1),
        (0x34, 2),
        (0x38, 4),
        (0x3A, 4),
        (0x3B, 4),
        (0x3C, 8),
        (0x3D, 8),
        (0x3E, 8),
        (0x7A, 4),
        (0x7F, 8),
    ] {
        let t = parse(&[code]);
        assert_eq!(t.length, LengthKind::Fixed(n), "type 0x{code:02X}");
        assert_eq!(t.data_type.code(), code);
        assert_eq!(t.char_encoding(), None);
    }
}

#[test]
fn byte_length_types() {
    assert_eq!(parse(&[0x26, 4]).length, LengthKind::ByteLen);
    assert_eq!(parse(&[0x24, 16]).max_len, 16);
    assert_eq!(parse(&[0x68, 1]).data_type, DataType::BitN);
    assert_eq!(parse(&[0x6D, 8]).data_type, DataType::FltN);
    assert_eq!(parse(&[0x6E, 4]).data_type, DataType::MoneyN);
    assert_eq!(parse(&[0x6F, 8]).data_type, DataType::DateTimeN);
    let d = parse(&[0x6A, 9, 18, 2]);
    assert_eq!((d.precision, d.scale), (18, 2));
    assert_eq!(parse(&[0x6C, 17, 38, 0]).data_type, DataType::NumericN);
    assert_eq!(parse(&[0x37, 5, 9, 0]).data_type, DataType::Decimal);
    assert_eq!(parse(&[0x3F, 5, 9, 9]).data_type, DataType::Numeric);
    assert_eq!(parse(&[0x28]).length, LengthKind::ByteLen);
    for (code, scale, max) in [(0x29, 7, 5), (0x29, 0, 3), (0x2A, 3, 7), (0x2B, 7, 10)] {
        let t = parse(&[code, scale]);
        assert_eq!(
            (t.length, t.scale, t.max_len),
            (LengthKind::ByteLen, scale, max)
        );
    }
}

#[test]
fn ushort_length_types_and_max() {
    let mut nv = vec![0xE7, 0x64, 0x00];
    nv.extend_from_slice(&LATIN1);
    let t = parse(&nv);
    assert_eq!((t.length, t.max_len), (LengthKind::UShortLen, 100));
    assert_eq!(t.char_encoding(), Some(CharEncoding::Utf16));
    assert_eq!(t.collation, Some(Collation(LATIN1)));

    let mut vmax = vec![0xA7, 0xFF, 0xFF];
    vmax.extend_from_slice(&LATIN1);
    let t = parse(&vmax);
    assert_eq!((t.length, t.max_len), (LengthKind::Plp, UNBOUNDED));
    assert_eq!(
        t.char_encoding(),
        Some(CharEncoding::CodePage(CodePage::SingleByte))
    );

    assert_eq!(parse(&[0xA5, 0xFF, 0xFF]).length, LengthKind::Plp);
    assert_eq!(parse(&[0xAD, 0x10, 0x00]).length, LengthKind::UShortLen);
    let mut ch = vec![0xAF, 0x0A, 0x00];
    ch.extend_from_slice(&LATIN1);
    assert!(parse(&ch).is_blank_padded());
}

#[test]
fn long_length_types() {
    let mut text = vec![0x23, 0xFF, 0xFF, 0xFF, 0x7F];
    text.extend_from_slice(&LATIN1);
    let t = parse(&text);
    assert!(t.is_long_text());
    assert!(t.char_encoding().is_some());
    let mut ntext = vec![0x63, 0xFE, 0xFF, 0xFF, 0x7F];
    ntext.extend_from_slice(&LATIN1);
    assert_eq!(parse(&ntext).char_encoding(), Some(CharEncoding::Utf16));
    let image = parse(&[0x22, 0xFF, 0xFF, 0xFF, 0x7F]);
    assert_eq!((image.length, image.collation), (LengthKind::LongLen, None));
}

#[test]
fn xml_udt_variant() {
    let x = parse(&[0xF1, 0]);
    assert_eq!(
        (x.length, x.char_encoding()),
        (LengthKind::Plp, Some(CharEncoding::Utf16))
    );
    let x = parse(&[0xF1, 1, 1, b'd', 0, 1, b'o', 0, 2, 0, b'c', 0, b'x', 0]);
    assert_eq!(x.xml_schema.unwrap().collection, "cx");
    let u = parse(&[0xF0, 0xFF, 0xFF, 0, 0, 1, b'g', 0, 1, 0, b'A', 0]);
    assert_eq!(u.length, LengthKind::Plp);
    assert_eq!(u.udt.unwrap().type_name, "g");
    let v = parse(&[0x62, 0x50, 0x1F, 0, 0]);
    assert_eq!((v.length, v.max_len), (LengthKind::Variant, 8016));
    assert!(v.may_hold_text());
}

#[test]
fn collation_bits() {
    let c = Collation(LATIN1);
    assert_eq!((c.lcid(), c.sort_id(), c.is_utf8()), (0x409, 0x34, false));
    // Latin1_General_100_CI_AS_SC_UTF8: the UTF-8 flag is bit 26 of the info word
    let utf8 = Collation([0x09, 0x04, 0x00, 0x04, 0x00]);
    assert!(utf8.is_utf8());
    assert_eq!(utf8.encoding(), CharEncoding::Utf8);
    let japanese = Collation([0x11, 0x04, 0x00, 0x00, 0x00]);
    assert_eq!(
        japanese.encoding(),
        CharEncoding::CodePage(CodePage::ShiftJis)
    );
    let chinese = Collation([0x04, 0x08, 0x00, 0x00, 0x00]);
    assert_eq!(
        chinese.encoding(),
        CharEncoding::CodePage(CodePage::DoubleByte)
    );
    assert!(CodePage::ShiftJis.is_lead(0x82) && !CodePage::ShiftJis.is_lead(0xB1));
}

#[test]
fn truncated_type_info_needs_more() {
    let mut vmax = vec![0xA7, 0xFF, 0xFF];
    vmax.extend_from_slice(&LATIN1);
    for cut in 0..vmax.len() {
        assert_eq!(TypeInfo::parse(&vmax[..cut]).unwrap(), None, "cut at {cut}");
    }
}

#[test]
fn malformed_type_info_is_an_error() {
    for bytes in [
        &[0x26, 3][..],
        &[0x24, 8],
        &[0x6A, 9, 39, 0],
        &[0x6A, 9, 10, 11],
        &[0x2A, 8],
        &[0xAD, 0xFF, 0xFF],
        &[0xA5, 0x41, 0x1F],
        &[0xF1, 2],
        &[0xF4],
        &[0xF5],
        &[0x27, 10],
        &[0x01],
    ] {
        assert!(TypeInfo::parse(bytes).is_err(), "{bytes:02X?}");
    }
}

#[test]
fn variant_encodings() {
    let mut props = LATIN1.to_vec();
    props.extend_from_slice(&[0x40, 0x1F]);
    assert_eq!(
        variant_char_encoding(0xE7, &props),
        Some(CharEncoding::Utf16)
    );
    assert!(variant_char_encoding(0xA7, &props).is_some());
    assert_eq!(variant_char_encoding(0xA7, &[]), None);
    assert_eq!(variant_char_encoding(0x38, &[]), None);
}
