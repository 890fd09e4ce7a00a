use super::*;
use crate::codec::fixtures::*;
use crate::codec::metadata::{Parsed, read_colmetadata};
use crate::codec::types::TypeInfo;

fn sample_meta() -> ColMetadata {
    let bytes = sample_metadata_token();
    match read_colmetadata(&mut Rd::at(&bytes, 1), false, true) {
        Ok(Parsed::Columns(m)) => m,
        _ => panic!("sample metadata"),
    }
}

fn ty(bytes: &[u8]) -> TypeInfo {
    TypeInfo::parse(bytes).unwrap().unwrap().0
}

#[test]
fn walks_every_value_of_a_row() {
    let meta = sample_meta();
    let row = sample_row("Ann", &[b"card 4111", b" 1111"]);
    let values: Vec<_> = RowValues::new(&row, &meta)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(values.len(), 10);
    assert_eq!(values[0].data, ValueData::Bytes(&42i32.to_le_bytes()));
    assert_eq!(values[1].data, ValueData::Bytes(&ucs2("Ann")[..]));
    let ValueData::Plp(notes) = values[2].data else {
        panic!()
    };
    assert_eq!(
        notes.chunks().collect::<Vec<_>>(),
        [&b"card 4111"[..], b" 1111"]
    );
    assert_eq!(
        (notes.len(), notes.declared_len, notes.contiguous()),
        (14, 14, None)
    );
    let ValueData::Text {
        text_ptr,
        timestamp,
        data,
    } = values[4].data
    else {
        panic!()
    };
    assert_eq!(
        (text_ptr.len(), timestamp.len(), data),
        (16, 8, &ucs2("bio 4111-1111")[..])
    );
    let ValueData::Variant {
        base_type,
        props,
        data,
    } = values[7].data
    else {
        panic!()
    };
    assert_eq!(
        (base_type, props.len(), data),
        (0xE7, 7, &ucs2("v 4111")[..])
    );
    assert_eq!(values[9].data, ValueData::Bytes("Kraków".as_bytes()));
    // values tile the token
    assert_eq!(values[0].start, 1);
    for pair in values.windows(2) {
        assert_eq!(pair[0].end, pair[1].start);
    }
    assert_eq!(values[9].end, row.len());
}

#[test]
fn nbcrow_nulls_come_from_the_bitmap() {
    let meta = sample_meta();
    let row = sample_nbcrow("Bob");
    let values: Vec<_> = RowValues::new(&row, &meta)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let nulls: Vec<bool> = values.iter().map(|v| v.data == ValueData::Null).collect();
    assert_eq!(
        nulls,
        [
            false, false, true, true, true, true, true, true, true, false
        ]
    );
    assert_eq!(values[1].data, ValueData::Bytes(&ucs2("Bob")[..]));
    assert_eq!(values[9].data, ValueData::Bytes(b"Lodz"));
    assert!(values[3].range().is_empty());
}

#[test]
fn in_row_nulls() {
    let intn = ty(&[0x26, 8]);
    let mut none = None;
    assert_eq!(
        read_value(&[0], 0, &intn, 99, &mut none).unwrap(),
        (ValueData::Null, 1)
    );
    let nvarchar = ty(&ushort_type(0xE7, 20, Some(LATIN1)));
    assert_eq!(
        read_value(&[0xFF, 0xFF], 0, &nvarchar, 99, &mut none).unwrap(),
        (ValueData::Null, 2)
    );
    assert_eq!(
        read_value(&[0, 0], 0, &nvarchar, 99, &mut none).unwrap(),
        (ValueData::Bytes(&[]), 2)
    );
    let vmax = ty(&ushort_type(0xA7, 0xFFFF, Some(LATIN1)));
    assert_eq!(
        read_value(&[0xFF; 8], 0, &vmax, 99, &mut none).unwrap(),
        (ValueData::Null, 8)
    );
    let empty = plp(0, &[]);
    let (data, end) = read_value(&empty, 0, &vmax, 99, &mut none).unwrap();
    assert_eq!(end, 12);
    let ValueData::Plp(p) = data else { panic!() };
    assert_eq!((p.is_empty(), p.contiguous()), (true, Some(&[][..])));
    let mut ntext = vec![0x63, 0xFF, 0xFF, 0xFF, 0x7F];
    ntext.extend(LATIN1);
    assert_eq!(
        read_value(&[0], 0, &ty(&ntext), 99, &mut none).unwrap(),
        (ValueData::Null, 1)
    );
    let variant = ty(&[0x62, 0x50, 0x1F, 0, 0]);
    assert_eq!(
        read_value(&[0; 4], 0, &variant, 99, &mut none).unwrap(),
        (ValueData::Null, 4)
    );
    let null = ty(&[0x1F]);
    assert_eq!(
        read_value(&[], 0, &null, 99, &mut none).unwrap(),
        (ValueData::Bytes(&[]), 0)
    );
}

#[test]
fn plp_with_unknown_length_and_resume() {
    let vmax = ty(&ushort_type(0xA5, 0xFFFF, None));
    let bytes = plp(PLP_UNKNOWN_LEN, &[b"ab", b"cde", b"f"]);
    let mut resume = None;
    // stop after the first chunk, then resume from where it stopped
    assert!(matches!(
        read_value(&bytes[..16], 0, &vmax, 999, &mut resume),
        Err(Stop::More)
    ));
    assert_eq!(resume, Some(14));
    let (data, end) = read_value(&bytes, 0, &vmax, 999, &mut resume).unwrap();
    assert_eq!((end, resume), (bytes.len(), None));
    let ValueData::Plp(p) = data else { panic!() };
    assert_eq!((p.declared_len, p.len()), (PLP_UNKNOWN_LEN, 6));
}

#[test]
fn scan_row_stops_and_resumes_inside_values() {
    let meta = sample_meta();
    let row = sample_row("Ann", &[&b"0123456789"[..]; 20]);
    let mut cursor = RowCursor::default();
    for arrived in 0..row.len() {
        assert!(matches!(
            scan_row(&row[..arrived], &meta, false, &mut cursor, usize::MAX),
            Err(Stop::More)
        ));
    }
    assert_eq!(
        scan_row(&row, &meta, false, &mut cursor, usize::MAX).unwrap(),
        row.len()
    );
    let nbc = sample_nbcrow("x");
    let mut cursor = RowCursor::default();
    assert!(matches!(
        scan_row(&nbc[..2], &meta, true, &mut cursor, usize::MAX),
        Err(Stop::More)
    ));
    assert_eq!(
        scan_row(&nbc, &meta, true, &mut cursor, usize::MAX).unwrap(),
        nbc.len()
    );
}

#[test]
fn truncated_complete_tokens_are_errors() {
    let meta = sample_meta();
    let row = sample_row("Ann", &[b"x"]);
    let cut = &row[..row.len() - 1];
    let last = RowValues::new(cut, &meta).unwrap().last().unwrap();
    assert!(matches!(last, Err(CodecError::Truncated(_))));
    assert!(RowValues::new(&[0xD2], &meta).is_err(), "bitmap missing");
    assert!(RowValues::new(&[0xFD], &meta).is_err(), "not a row");
}

#[test]
fn bitmap_sizes() {
    assert_eq!(
        [1, 8, 9, 16, 17, 4096].map(bitmap_len),
        [1, 1, 2, 2, 3, 512]
    );
    assert!(is_null(&[0b0000_0100], 2) && !is_null(&[0b0000_0100], 1));
    assert!(!is_null(&[], 40), "out of range is not null");
}
