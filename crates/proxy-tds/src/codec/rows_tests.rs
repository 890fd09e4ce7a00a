use std::sync::Arc;

use bytes::BytesMut;

use super::*;
use crate::codec::fixtures::*;
use crate::codec::tokens::{StreamState, Token, next_token};
use crate::codec::values::{RowValues, Value};

fn sample_meta() -> Arc<ColMetadata> {
    let mut state = StreamState::new();
    match next_token(&sample_metadata_token(), &mut state).unwrap() {
        Some((Token::ColMetadata(m), _)) => m,
        other => panic!("{other:?}"),
    }
}

fn values<'a>(token: &'a [u8], meta: &'a ColMetadata) -> Vec<Value<'a>> {
    RowValues::new(token, meta)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The rewritten token must frame exactly like a server's would.
fn assert_frames(token: &[u8], meta: &Arc<ColMetadata>) {
    let mut state = StreamState::new();
    state.set_metadata(Some(Arc::clone(meta)));
    let (_, len) = next_token(token, &mut state).unwrap().expect("complete");
    assert_eq!(len, token.len());
}

fn mask_digits(text: &str) -> Option<String> {
    text.contains("4111").then(|| {
        text.chars()
            .map(|c| if c.is_ascii_digit() { '*' } else { c })
            .collect()
    })
}

#[test]
fn a_row_without_matches_is_unchanged_and_nothing_is_written() {
    let meta = sample_meta();
    let row = sample_row("Ann", &[b"nothing here"]);
    let mut out = BytesMut::new();
    let mut seen = Vec::new();
    let result = RowMasker::new()
        .mask_row(&row, &meta, &mut out, |col, text| {
            seen.push((col, text.to_owned()));
            None
        })
        .unwrap();
    assert_eq!(result, Masked::Unchanged);
    assert!(out.is_empty());
    let cols: Vec<usize> = seen.iter().map(|s| s.0).collect();
    assert_eq!(cols, [1, 2, 4, 7, 8, 9], "only character columns");
    assert_eq!(seen[0].1, "Ann");
    assert_eq!(seen[2].1, "bio 4111-1111");
    assert_eq!(seen[3].1, "v 4111");
    assert_eq!(seen[5].1, "Kraków");
}

#[test]
fn returning_the_same_text_is_not_a_change() {
    let meta = sample_meta();
    let row = sample_row("Ann", &[b"x"]);
    let mut out = BytesMut::new();
    let r = RowMasker::new()
        .mask_row(&row, &meta, &mut out, |_, t| Some(t.to_owned()))
        .unwrap();
    assert_eq!((r, out.len()), (Masked::Unchanged, 0));
}

#[test]
fn masked_values_are_re_encoded_and_the_rest_copied() {
    let meta = sample_meta();
    // the card number is split across PLP chunks; the callback sees it whole
    let row = sample_row("Ann", &[b"card 41", b"11 1111"]);
    let mut out = BytesMut::from(&b"prefix"[..]);
    let result = RowMasker::new()
        .mask_row(&row, &meta, &mut out, |_, t| mask_digits(t))
        .unwrap();
    assert_eq!(result, Masked::Rewritten);
    assert_eq!(&out[..6], b"prefix", "appended after what was there");
    let new = &out[6..];
    assert_frames(new, &meta);
    let old_values = values(&row, &meta);
    let new_values = values(new, &meta);
    let ValueData::Plp(notes) = new_values[2].data else {
        panic!()
    };
    assert_eq!(notes.contiguous(), Some(&b"card **** ****"[..]));
    assert_eq!(notes.declared_len, 14);
    let ValueData::Text {
        text_ptr,
        timestamp,
        data,
    } = new_values[4].data
    else {
        panic!()
    };
    let ValueData::Text {
        text_ptr: p0,
        timestamp: t0,
        ..
    } = old_values[4].data
    else {
        panic!()
    };
    assert_eq!(
        (text_ptr, timestamp, data),
        (p0, t0, &ucs2("bio ****-****")[..])
    );
    let ValueData::Variant {
        base_type,
        props,
        data,
    } = new_values[7].data
    else {
        panic!()
    };
    assert_eq!(
        (base_type, props.len(), data),
        (0xE7, 7, &ucs2("v ****")[..])
    );
    // untouched values keep their exact bytes
    for i in [0, 1, 3, 5, 6, 8, 9] {
        assert_eq!(
            &row[old_values[i].range()],
            &new[new_values[i].range()],
            "column {i}"
        );
    }
}

#[test]
fn nbcrow_keeps_its_bitmap_and_nulls() {
    let meta = sample_meta();
    let row = sample_nbcrow("4111 Bob");
    let mut out = BytesMut::new();
    let result = RowMasker::new()
        .mask_row(&row, &meta, &mut out, |_, t| mask_digits(t))
        .unwrap();
    assert_eq!(result, Masked::Rewritten);
    assert_eq!(&out[..3], &row[..3], "token byte and bitmap");
    assert_frames(&out, &meta);
    let new_values = values(&out, &meta);
    assert_eq!(new_values[1].data, ValueData::Bytes(&ucs2("**** Bob")[..]));
    assert_eq!(new_values[2].data, ValueData::Null);
}

#[test]
fn a_replacement_longer_than_the_column_is_cut_to_fit() {
    let meta = sample_meta();
    let row = sample_row("Ann", &[]);
    let mut out = BytesMut::new();
    let long = "\u{1F600}".repeat(30); // 60 UTF-16 units for an NVARCHAR(40)
    RowMasker::new()
        .mask_row(&row, &meta, &mut out, |col, _| {
            (col == 1).then(|| long.clone())
        })
        .unwrap();
    let v = values(&out, &meta);
    let ValueData::Bytes(name) = v[1].data else {
        panic!()
    };
    assert_eq!(name.len(), 80, "20 whole surrogate pairs");
    assert_eq!(name, &ucs2(&"\u{1F600}".repeat(20))[..]);
    // the UTF-8 VARCHAR(12) is cut at a character boundary
    let mut out = BytesMut::new();
    RowMasker::new()
        .mask_row(&row, &meta, &mut out, |col, _| {
            (col == 9).then(|| "ąąąąąąąą".into())
        })
        .unwrap();
    let v = values(&out, &meta);
    assert_eq!(v[9].data, ValueData::Bytes("ąąąąąą".as_bytes()));
}

#[test]
fn nchar_replacements_are_blank_padded() {
    let meta = sample_meta();
    let row = sample_row("Ann", &[]);
    let mut out = BytesMut::new();
    RowMasker::new()
        .mask_row(&row, &meta, &mut out, |col, _| {
            (col == 8).then(|| "X".into())
        })
        .unwrap();
    assert_eq!(
        values(&out, &meta)[8].data,
        ValueData::Bytes(&ucs2("X   ")[..])
    );
}

#[test]
fn code_page_text_keeps_its_non_ascii_bytes() {
    let meta = sample_meta();
    let row = sample_row("Ann", &[b"Caf\xE9 4111 \x80"]);
    let mut out = BytesMut::new();
    let mut seen = String::new();
    RowMasker::new()
        .mask_row(&row, &meta, &mut out, |col, t| {
            if col == 2 {
                seen = t.to_owned();
            }
            (col == 2).then(|| t.replace("4111", "####"))
        })
        .unwrap();
    assert_eq!(seen.chars().count(), 11, "one character per byte");
    let ValueData::Plp(notes) = values(&out, &meta)[2].data else {
        panic!()
    };
    assert_eq!(notes.contiguous(), Some(&b"Caf\xE9 #### \x80"[..]));
}

#[test]
fn utf16_split_across_chunks_is_decoded_whole() {
    let mut state = StreamState::new();
    let meta_bytes = colmetadata(&[column(
        1,
        &ushort_type(0xE7, 0xFFFF, Some(LATIN1)),
        None,
        "n",
    )]);
    let Some((Token::ColMetadata(meta), _)) = next_token(&meta_bytes, &mut state).unwrap() else {
        panic!()
    };
    let text = ucs2("zażółć 4111");
    let mut row = vec![0xD1];
    row.extend(plp(
        text.len() as u64,
        &[&text[..3], &text[3..10], &text[10..]],
    ));
    let mut seen = String::new();
    let mut out = BytesMut::new();
    let r = RowMasker::new()
        .mask_row(&row, &meta, &mut out, |_, t| {
            seen = t.to_owned();
            mask_digits(t)
        })
        .unwrap();
    assert_eq!((seen.as_str(), r), ("zażółć 4111", Masked::Rewritten));
    let ValueData::Plp(p) = values(&out, &meta)[0].data else {
        panic!()
    };
    assert_eq!(p.contiguous(), Some(&ucs2("zażółć ****")[..]));
}

#[test]
fn masking_to_empty_and_from_null() {
    let meta = sample_meta();
    let row = sample_row("Ann", &[b"4111"]);
    let mut out = BytesMut::new();
    RowMasker::new()
        .mask_row(&row, &meta, &mut out, |col, _| (col == 2).then(String::new))
        .unwrap();
    let ValueData::Plp(p) = values(&out, &meta)[2].data else {
        panic!()
    };
    assert!(p.is_empty());
    assert_frames(&out, &meta);
}

#[test]
fn metadata_without_text_skips_the_walk() {
    let mut state = StreamState::new();
    let meta_bytes = colmetadata(&[column(0, &[0x38], None, "id")]);
    let Some((Token::ColMetadata(meta), _)) = next_token(&meta_bytes, &mut state).unwrap() else {
        panic!()
    };
    let mut out = BytesMut::new();
    let r = RowMasker::new()
        .mask_row(&[0xD1, 1, 0, 0, 0], &meta, &mut out, |_, _| {
            panic!("no text")
        })
        .unwrap();
    assert_eq!(r, Masked::Unchanged);
}

#[test]
fn return_values_are_masked() {
    let (bytes, expected) = sample_stream();
    let start: usize = expected[..9].iter().map(|e| e.1).sum();
    let token = &bytes[start..start + expected[9].1];
    let Some((Token::ReturnValue(rv), _)) = next_token(token, &mut StreamState::new()).unwrap()
    else {
        panic!()
    };
    let mut out = BytesMut::new();
    let mut masker = RowMasker::new();
    assert_eq!(
        masker
            .mask_return_value(token, &rv, &mut out, |_| None)
            .unwrap(),
        Masked::Unchanged
    );
    let r = masker
        .mask_return_value(token, &rv, &mut out, |t| Some(format!("[{t}]")))
        .unwrap();
    assert_eq!(r, Masked::Rewritten);
    let Some((Token::ReturnValue(new), len)) = next_token(&out, &mut StreamState::new()).unwrap()
    else {
        panic!()
    };
    assert_eq!(len, out.len());
    assert_eq!(&out[..new.value.start], &token[..rv.value.start]);
    assert_eq!(
        &out[new.value.start + 8..new.value.end],
        &plp(8, &[&ucs2("[ok]")])[8..]
    );
}

#[test]
fn text_of_borrows_when_it_can() {
    let meta = sample_meta();
    let row = sample_row("Ann", &[b"plain ascii"]);
    let v = values(&row, &meta);
    let mut masker = RowMasker::new();
    let text = masker
        .text_of(v[2].data, &meta.columns[2].type_info)
        .unwrap();
    assert_eq!(text, "plain ascii");
    assert!(
        std::ptr::eq(text.as_ptr(), row[v[2].start + 12..].as_ptr()),
        "borrowed from the token"
    );
    assert_eq!(masker.text_of(v[0].data, &meta.columns[0].type_info), None);
}

#[test]
fn xml_is_masked_as_utf16_and_non_text_variants_are_skipped() {
    let mut state = StreamState::new();
    let meta_bytes = colmetadata(&[
        column(1, &[0xF1, 0], None, "doc"),
        column(1, &[0x62, 0x50, 0x1F, 0, 0], None, "v"),
    ]);
    let Some((Token::ColMetadata(meta), _)) = next_token(&meta_bytes, &mut state).unwrap() else {
        panic!()
    };
    let xml = ucs2("<card>4111</card>");
    let mut row = vec![0xD1];
    row.extend(plp(xml.len() as u64, &[&xml]));
    // SQL_VARIANT holding an INT: base type, no properties, 4 data bytes
    row.extend([6, 0, 0, 0, 0x38, 0, 9, 0, 0, 0]);
    let mut calls = Vec::new();
    let mut out = BytesMut::new();
    RowMasker::new()
        .mask_row(&row, &meta, &mut out, |col, t| {
            calls.push(col);
            mask_digits(t)
        })
        .unwrap();
    assert_eq!(calls, [0]);
    let v = values(&out, &meta);
    let ValueData::Plp(p) = v[0].data else {
        panic!()
    };
    assert_eq!(p.contiguous(), Some(&ucs2("<card>****</card>")[..]));
    assert_eq!(&out[v[1].range()], &row[row.len() - 10..]);
}
