//! Unit tests of masking inside structured values: binary and text forms of the same value
//! mask the same way, lengths and quoting stay valid, malformed input fails closed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;

use gateway_core::masking::{MaskCounts, Masked, SessionMasks};
use proptest::prelude::*;

use super::shape::{Field, Shape, Shaper, TypeInfo};
use super::{Pool, Walker};

fn masks() -> Arc<SessionMasks> {
    let block = gateway_core::config::MaskingConfig {
        connections: vec!["c".into()],
        detectors: vec!["card".into(), "email".into()],
        columns: vec!["customers.ssn".into()],
        ..Default::default()
    };
    gateway_core::masking::MaskingEngine::new(&[block], [7; 32])
        .unwrap()
        .for_session("c", &[])
        .unwrap()
}

/// Mask `v` of `shape`; the masked bytes, `None` for NULL.
fn run(shape: &Shape, binary: bool, whole: Option<usize>, v: &[u8]) -> Option<Vec<u8>> {
    let m = masks();
    let mut counts = MaskCounts::new();
    let mut pool = Pool::default();
    let mut w = Walker {
        masks: &m,
        counts: &mut counts,
        pool: &mut pool,
        card: true,
    };
    let mut out = Vec::new();
    match w.value(shape, binary, whole, v, &mut out) {
        Masked::Unchanged => Some(v.to_vec()),
        Masked::Replaced => Some(out),
        Masked::Null => None,
    }
}

fn text_array() -> Shape {
    Shape::Array {
        elem_oid: 25,
        elem: Arc::new(Shape::Text),
        delim: b',',
    }
}

/// A one-dimensional binary array of `elem` OID.
fn bin_array(elem: u32, items: &[Option<&[u8]>]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&1i32.to_be_bytes());
    let nulls = items.iter().any(Option::is_none) as i32;
    v.extend_from_slice(&nulls.to_be_bytes());
    v.extend_from_slice(&elem.to_be_bytes());
    v.extend_from_slice(&(items.len() as i32).to_be_bytes());
    v.extend_from_slice(&1i32.to_be_bytes());
    for it in items {
        match it {
            None => v.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(b) => {
                v.extend_from_slice(&(b.len() as i32).to_be_bytes());
                v.extend_from_slice(b);
            }
        }
    }
    v
}

/// A binary record of (OID, value) fields.
fn bin_record(fields: &[(u32, Option<&[u8]>)]) -> Vec<u8> {
    let mut v = (fields.len() as i32).to_be_bytes().to_vec();
    for (oid, f) in fields {
        v.extend_from_slice(&oid.to_be_bytes());
        match f {
            None => v.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(b) => {
                v.extend_from_slice(&(b.len() as i32).to_be_bytes());
                v.extend_from_slice(b);
            }
        }
    }
    v
}

#[test]
fn text_arrays_mask_each_element_in_both_forms() {
    let bin = bin_array(25, &[Some(b"ada@example.com"), None, Some(b"plain")]);
    let got = run(&text_array(), true, None, &bin).unwrap();
    assert_eq!(
        got,
        bin_array(25, &[Some(b"[REDACTED:email]"), None, Some(b"plain")])
    );
    let text = run(&text_array(), false, None, b"{ada@example.com,NULL,plain}");
    assert_eq!(text.unwrap(), b"{\"[REDACTED:email]\",NULL,plain}");
    // Unchanged values are returned as they are.
    let clean = bin_array(25, &[Some(b"plain")]);
    assert_eq!(run(&text_array(), true, None, &clean).unwrap(), clean);
}

#[test]
fn covered_arrays_keep_their_shape() {
    let bin = bin_array(25, &[Some(b"078051120"), Some(b"x")]);
    let got = run(&text_array(), true, Some(0), &bin).unwrap();
    assert_eq!(
        got,
        bin_array(
            25,
            &[Some(b"[REDACTED:column]"), Some(b"[REDACTED:column]")]
        )
    );
    let got = run(&text_array(), false, Some(0), b"{{a,\"b c\"},{NULL,d}}").unwrap();
    assert_eq!(
        got,
        b"{{\"[REDACTED:column]\",\"[REDACTED:column]\"},{NULL,\"[REDACTED:column]\"}}".to_vec()
    );
    // An array of integers under a rule is NULL, as an integer is.
    let ints = Shape::Array {
        elem_oid: 20,
        elem: Arc::new(Shape::Int(8)),
        delim: b',',
    };
    assert_eq!(run(&ints, true, Some(0), &bin_array(20, &[])), None);
}

#[test]
fn bigint_cards_are_null_in_both_forms() {
    let card = 4111111111111111i64.to_be_bytes();
    assert_eq!(run(&Shape::Int(8), true, None, &card), None);
    assert_eq!(run(&Shape::Int(8), false, None, b"4111111111111111"), None);
    let other = 4111111111111112i64.to_be_bytes();
    assert_eq!(run(&Shape::Int(8), true, None, &other).unwrap(), other);
    // Inside an array, the element alone becomes NULL and the header says so.
    let arr = bin_array(20, &[Some(&card), Some(&7i64.to_be_bytes())]);
    let ints = Shape::Array {
        elem_oid: 20,
        elem: Arc::new(Shape::Int(8)),
        delim: b',',
    };
    assert_eq!(
        run(&ints, true, None, &arr).unwrap(),
        bin_array(20, &[None, Some(&7i64.to_be_bytes())])
    );
}

#[test]
fn binary_numerics_are_read_as_their_text() {
    // 4111111111111111 = 4111 1111 1111 1111 in base 10000, weight 3, scale 0.
    let mut n = Vec::new();
    for h in [4u16, 3, 0, 0, 4111, 1111, 1111, 1111] {
        n.extend_from_slice(&h.to_be_bytes());
    }
    assert_eq!(run(&Shape::Numeric, true, None, &n), None);
    // The same digits with a display scale (text `4111111111111111.00`) are no card.
    n[6..8].copy_from_slice(&2u16.to_be_bytes());
    assert_eq!(run(&Shape::Numeric, true, None, &n).unwrap(), n);
    // 378282246310005 = 378 2822 4631 0005.
    let mut amex = Vec::new();
    for h in [4u16, 3, 0, 0, 378, 2822, 4631, 5] {
        amex.extend_from_slice(&h.to_be_bytes());
    }
    assert_eq!(run(&Shape::Numeric, true, None, &amex), None);
    // A length that disagrees with the digit count fails closed.
    assert_eq!(run(&Shape::Numeric, true, None, &amex[..10]), None);
}

fn customers_row() -> Shape {
    let f = |shape: Shape, type_oid: u32, rule: Option<usize>| Field {
        type_oid,
        shape: Arc::new(shape),
        rule,
    };
    Shape::Row(Arc::from(vec![
        f(Shape::Int(4), 23, None),
        f(Shape::Text, 25, None),
        f(Shape::Text, 25, Some(0)),
        f(Shape::Scalar, 1082, None),
    ]))
}

#[test]
fn row_types_mask_covered_fields_and_scan_the_rest() {
    let date = 8000i32.to_be_bytes();
    let bin = bin_record(&[
        (23, Some(&1i32.to_be_bytes())),
        (25, Some(b"Ada ada@example.com")),
        (25, Some(b"078051120")),
        (1082, Some(&date)),
    ]);
    let got = run(&customers_row(), true, None, &bin).unwrap();
    assert_eq!(
        got,
        bin_record(&[
            (23, Some(&1i32.to_be_bytes())),
            (25, Some(b"Ada [REDACTED:email]")),
            (25, Some(b"[REDACTED:column]")),
            (1082, Some(&date)),
        ])
    );
    let text = run(
        &customers_row(),
        false,
        None,
        b"(1,\"Ada ada@example.com\",078051120,2024-01-15)",
    )
    .unwrap();
    assert_eq!(
        text,
        b"(1,\"Ada [REDACTED:email]\",\"[REDACTED:column]\",2024-01-15)".to_vec()
    );
    // A row masked whole keeps its shape: text fields replaced, the rest NULL.
    let whole = run(&customers_row(), false, Some(0), b"(1,a,b,2024-01-15)").unwrap();
    assert_eq!(
        whole,
        b"(,\"[REDACTED:column]\",\"[REDACTED:column]\",)".to_vec()
    );
    // Fewer fields than the catalog named (a column dropped since): all masked.
    let stale = run(&customers_row(), false, None, b"(1,078051120,x)").unwrap();
    assert!(!String::from_utf8_lossy(&stale).contains("078051120"));
}

#[test]
fn records_read_fields_by_their_own_types() {
    let bin = bin_record(&[
        (25, Some(b"x a@b.io")),
        (20, Some(&4111111111111111i64.to_be_bytes())),
        (16, Some(&[1])),
        (99999, Some(b"unknown type")),
    ]);
    let got = run(&Shape::Record, true, None, &bin).unwrap();
    assert_eq!(
        got,
        bin_record(&[
            (25, Some(b"x [REDACTED:email]")),
            (20, None),
            (16, Some(&[1])),
            (99999, None),
        ])
    );
    let text = run(
        &Shape::Record,
        false,
        None,
        b"(\"x a@b.io\",\"say \"\"hi\"\"\",)",
    )
    .unwrap();
    assert_eq!(
        text,
        b"(\"x [REDACTED:email]\",\"say \"\"hi\"\"\",)".to_vec()
    );
}

#[test]
fn enums_become_null_under_a_rule_or_a_detector_hit() {
    assert_eq!(run(&Shape::Enum, true, None, b"gold").unwrap(), b"gold");
    assert_eq!(run(&Shape::Enum, true, Some(0), b"gold"), None);
    assert_eq!(run(&Shape::Enum, false, None, b"a@b.io"), None);
}

#[test]
fn malformed_binary_values_fail_closed() {
    // Ten dimensions, a count past the data, a truncated element.
    let mut v = bin_array(25, &[Some(b"a")]);
    v[..4].copy_from_slice(&10i32.to_be_bytes());
    assert_eq!(run(&text_array(), true, None, &v), None);
    let mut v = bin_array(25, &[Some(b"a")]);
    v[12..16].copy_from_slice(&i32::MAX.to_be_bytes());
    assert_eq!(run(&text_array(), true, None, &v), None);
    let v = bin_array(25, &[Some(b"abc")]);
    assert_eq!(run(&text_array(), true, None, &v[..v.len() - 1]), None);
    let r = bin_record(&[(25, Some(b"a"))]);
    assert_eq!(run(&Shape::Record, true, None, &r[..r.len() - 1]), None);
    // Text that is no literal of its type is scanned as text.
    assert_eq!(
        run(&text_array(), false, None, b"a@b.io").unwrap(),
        b"[REDACTED:email]"
    );
}

#[test]
fn catalog_types_are_classified_by_their_send_function() {
    let m = masks();
    let info = |typtype: u8, send: &str, elem: u32, base: u32| TypeInfo {
        typtype,
        send: send.into(),
        elem,
        base,
        delim: b',',
        row: None,
        view: false,
    };
    let mut types = HashMap::new();
    types.insert(50_000, Some(info(b'e', "enum_send", 0, 0)));
    types.insert(50_001, Some(info(b'b', "array_send", 50_000, 0)));
    types.insert(50_002, Some(info(b'd', "textsend", 0, 25)));
    let mut row = info(b'c', "record_send", 0, 0);
    row.row = Some((
        Arc::from("public.customers"),
        vec![(Arc::from("id"), 23), (Arc::from("ssn"), 50_002)],
    ));
    types.insert(50_003, Some(row));
    let mut view = info(b'c', "record_send", 0, 0);
    view.row = Some((
        Arc::from("public.customers_view"),
        vec![(Arc::from("id"), 23), (Arc::from("x"), 25)],
    ));
    view.view = true;
    types.insert(50_006, Some(view));
    types.insert(50_004, Some(info(b'b', "hstore_send", 0, 0)));
    types.insert(50_005, None);
    let s = Shaper {
        types: &types,
        masks: &m,
    };
    assert_eq!(*s.shape(50_000), Shape::Enum);
    assert!(matches!(&*s.shape(50_001), Shape::Array { elem, .. } if **elem == Shape::Enum));
    assert_eq!(*s.shape(50_002), Shape::Text);
    match &*s.shape(50_003) {
        Shape::Row(f) => {
            assert_eq!(f[0].rule, None);
            assert_eq!(f[1].rule, Some(0));
            assert_eq!(*f[1].shape, Shape::Text);
        }
        other => panic!("{other:?}"),
    }
    // A view's row renames its sources: every field is masked while rules are in force.
    match &*s.shape(50_006) {
        Shape::Row(f) => assert!(f.iter().all(|f| f.rule.is_some())),
        other => panic!("{other:?}"),
    }
    assert_eq!(*s.shape(50_004), Shape::Opaque);
    assert_eq!(*s.shape(50_005), Shape::Opaque);
    assert_eq!(*s.shape(1009), text_array());
}

proptest! {
    /// Any bytes as a binary array or record: no panic, and the result is either the input,
    /// NULL, or a value that decodes again.
    #[test]
    fn arbitrary_binary_never_panics(v in proptest::collection::vec(any::<u8>(), 0..64)) {
        for shape in [text_array(), Shape::Record, customers_row(), Shape::Numeric] {
            let _ = run(&shape, true, None, &v);
            let _ = run(&shape, false, Some(0), &v);
        }
    }

    /// Masked text arrays decode to the masked elements, in binary and text alike.
    #[test]
    fn text_and_binary_arrays_agree(items in proptest::collection::vec(
        prop_oneof![Just("a@b.io".to_string()), "[a-z \"\\\\,{}]{0,8}"], 0..5)
    ) {
        let bin = bin_array(25, &items.iter().map(|s| Some(s.as_bytes())).collect::<Vec<_>>());
        let masked = run(&text_array(), true, None, &bin).unwrap();
        let mut lit = String::from("{");
        for (i, s) in items.iter().enumerate() {
            if i > 0 { lit.push(','); }
            lit.push('"');
            lit.push_str(&s.replace('\\', "\\\\").replace('"', "\\\""));
            lit.push('"');
        }
        lit.push('}');
        let text = run(&text_array(), false, None, lit.as_bytes()).unwrap();
        let want: Vec<String> = items.iter().map(|s| if s.contains("a@b.io") {
            s.replace("a@b.io", "[REDACTED:email]")
        } else { s.clone() }).collect();
        let mut elems = Vec::new();
        super::text::array_items_for_tests(&text, &mut elems);
        prop_assert_eq!(&elems, &want);
        let expect = bin_array(25, &want.iter().map(|s| Some(s.as_bytes())).collect::<Vec<_>>());
        prop_assert_eq!(masked, expect);
    }
}
