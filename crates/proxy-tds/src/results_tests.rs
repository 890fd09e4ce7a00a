use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use gateway_core::config::MaskingConfig;
use gateway_core::masking::{MaskingEngine, SessionMasks};

use super::{Ended, InFlight, Lineage, Responses};
use crate::codec::fixtures::{
    b_varchar, colmetadata, column, done, sample_columns, sample_metadata_token, sample_nbcrow,
    sample_row, ucs2, ushort_type, ushort_value,
};
use crate::codec::packet::{self, HEADER_LEN};

const LATIN1: [u8; 5] = [0x09, 0x04, 0xD0, 0x00, 0x34];

fn masks(columns: &[&str]) -> Arc<SessionMasks> {
    let block = MaskingConfig {
        connections: vec!["sales".into()],
        detectors: vec!["card".into(), "email".into()],
        columns: columns.iter().map(|c| c.to_string()).collect(),
        ..Default::default()
    };
    MaskingEngine::new(&[block], [5; 32])
        .expect("valid block")
        .for_session("sales", &[])
        .expect("applies")
}

/// `payload` as packets of `room` payload bytes each, EOM on the last.
fn packets(payload: &[u8], room: usize) -> BytesMut {
    let mut out = BytesMut::new();
    let chunks: Vec<&[u8]> = payload.chunks(room).collect();
    for (i, c) in chunks.iter().enumerate() {
        let eom = if i + 1 == chunks.len() {
            packet::STATUS_EOM
        } else {
            0
        };
        packet::put_packet(&mut out, packet::TABULAR_RESULT, eom, [0, 57], i as u8, c);
    }
    out
}

/// The payload of the packets in `wire`, and how many packets there were.
fn payload_of(wire: &[u8]) -> (Vec<u8>, usize) {
    let (mut at, mut body, mut n) = (0, Vec::new(), 0);
    while at < wire.len() {
        let len = usize::from(u16::from_be_bytes([wire[at + 2], wire[at + 3]]));
        assert!(len <= 512, "a packet over the session's size");
        assert_eq!(&wire[at + 4..at + 6], &[0, 57], "the target's SPID is kept");
        body.extend_from_slice(&wire[at + HEADER_LEN..at + len]);
        at += len;
        n += 1;
    }
    (body, n)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn answer(rows: usize) -> Vec<u8> {
    let mut s = colmetadata(&[
        column(1, &ushort_type(0xE7, 200, Some(LATIN1)), None, "name"),
        column(1, &ushort_type(0xE7, 200, Some(LATIN1)), None, "card"),
    ]);
    for i in 0..rows {
        s.push(0xD1);
        s.extend(ushort_value(&ucs2(&format!("person{i}@example.com"))));
        s.extend(ushort_value(&ucs2("4111 1111 1111 1111")));
    }
    s.extend(done(0xFD, 0, 0xC1, 0));
    s
}

fn run(resp: &mut Responses, wire: &[u8], read: usize) -> (BytesMut, Vec<Ended>) {
    let (mut out, mut ended) = (BytesMut::new(), Vec::new());
    for piece in wire.chunks(read) {
        resp.packets.extend_from_slice(piece);
        resp.relay(512, &mut out, &mut ended).expect("relayed");
    }
    (out, ended)
}

fn inflight() -> Option<InFlight> {
    Some(InFlight {
        number: 1,
        started: Instant::now(),
        lineage: Lineage::default(),
        prepare: None,
    })
}

#[test]
fn unmasked_answers_pass_byte_for_byte_and_are_counted() {
    let body = answer(40);
    let wire = packets(&body, 100);
    for read in [1, 7, 4096] {
        let mut resp = Responses::new(BytesMut::new(), None);
        resp.inflight = inflight();
        let (out, ended) = run(&mut resp, &wire, read);
        assert_eq!(&out[..], &wire[..], "read size {read}");
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].rows, Some(40));
        assert!(ended[0].masked.is_none());
    }
}

#[test]
fn rows_cut_across_packets_are_masked_and_repacked() {
    let body = answer(40);
    // Rows are cut at every possible place by 13-byte packets.
    let wire = packets(&body, 13);
    let mut resp = Responses::new(BytesMut::new(), Some(masks(&["*.card"])));
    resp.inflight = inflight();
    let (out, ended) = run(&mut resp, &wire, 5);
    let (got, n) = payload_of(&out);
    assert!(n > 1, "repacked into packets of the session's size");
    assert!(!contains(&got, &ucs2("@example.com")), "e-mails masked");
    assert!(
        !contains(&got, &ucs2("4111 1111")),
        "the card column masked"
    );
    assert!(contains(&got, &ucs2("[REDACTED:email]")));
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].rows, Some(40));
    let masked = ended[0].masked.as_ref().expect("counts");
    assert_eq!(masked["email"], 40, "{masked}");
    assert_eq!(masked["column:*.card"], 40, "{masked}");
}

#[test]
fn a_masked_answer_where_nothing_changes_keeps_its_tokens() {
    // Every column type of the codec's sample, values with nothing to mask.
    let mut body = sample_metadata_token();
    body.extend(sample_row("Ada", &[b"plain ", b"notes"]));
    body.extend(sample_nbcrow("Alan"));
    body.extend(done(0xFD, 0x10, 0xC1, 2));
    let wire = packets(&body, 200);
    let mut resp = Responses::new(BytesMut::new(), Some(masks(&["*.secret"])));
    resp.inflight = inflight();
    let (out, ended) = run(&mut resp, &wire, 64);
    let (got, _) = payload_of(&out);
    // The sample's bio and variant values hold "4111" fragments, not card numbers.
    assert_eq!(got, body);
    assert_eq!(ended[0].rows, Some(2));
    assert!(sample_columns().len() > 5);
}

#[test]
fn a_rule_on_a_column_that_is_not_text_withholds_the_answer() {
    let mut body = colmetadata(&[column(0, &[0x38], None, "secret")]);
    body.push(0xD1);
    body.extend(1234i32.to_le_bytes());
    body.extend(done(0xFD, 0x10, 0xC1, 1));
    let wire = packets(&body, 200);
    let mut resp = Responses::new(BytesMut::new(), Some(masks(&["*.secret"])));
    resp.inflight = inflight();
    let (out, ended) = run(&mut resp, &wire, 4096);
    let (got, _) = payload_of(&out);
    assert!(
        !contains(&got, &1234i32.to_le_bytes()),
        "the value never leaves"
    );
    assert!(contains(&got, &ucs2("withheld")), "the client is told why");
    assert_eq!(got.first(), Some(&0xAA), "an ERROR, then the final DONE");
    assert_eq!(ended.len(), 1);
}

#[test]
fn an_unreadable_answer_on_a_masked_session_ends_it_with_an_error() {
    let mut body = answer(1);
    body.insert(body.len() - 13, 0x01); // not a token type
    let wire = packets(&body, 200);
    let mut resp = Responses::new(BytesMut::new(), Some(masks(&[])));
    resp.inflight = inflight();
    let (mut out, mut ended) = (BytesMut::new(), Vec::new());
    resp.packets.extend_from_slice(&wire);
    assert!(resp.relay(512, &mut out, &mut ended).is_err());
    let (got, _) = payload_of(&out);
    assert!(
        !contains(&got, &ucs2("4111")),
        "nothing unread is passed on"
    );
    assert!(contains(&got, &ucs2("cannot be read")));
}

/// A RETURNVALUE of an INT OUTPUT parameter (`status` 1) or UDF result (2); NULL for `None`.
fn return_value(ordinal: u16, status: u8, value: Option<i32>) -> Vec<u8> {
    let mut v = vec![0xAC];
    v.extend(ordinal.to_le_bytes());
    v.extend(b_varchar("@handle"));
    v.push(status);
    v.extend([0, 0, 0, 0, 1, 0, 0x26, 4]);
    match value {
        Some(x) => {
            v.push(4);
            v.extend(x.to_le_bytes());
        }
        None => v.push(0),
    }
    v
}

/// An `sp_prepexec` answer: rows, the OUTPUT parameters given, the procedure's end.
fn prepexec_answer(outputs: &[Vec<u8>]) -> Vec<u8> {
    let mut s = answer(2);
    s.truncate(s.len() - 13);
    s.extend(done(0xFF, 0x11, 0xC1, 2));
    s.extend([0x79, 0, 0, 0, 0]);
    for o in outputs {
        s.extend(o);
    }
    s.extend(done(0xFE, 0, 0xE0, 0));
    s
}

fn handle_of(outputs: &[Vec<u8>], masked: bool) -> Option<i64> {
    let wire = packets(&prepexec_answer(outputs), 100);
    let masks = masked.then(|| masks(&["*.card"]));
    let mut resp = Responses::new(BytesMut::new(), masks);
    resp.inflight = inflight();
    let (_, ended) = run(&mut resp, &wire, 37);
    assert_eq!(ended.len(), 1);
    ended[0].handle
}

#[test]
fn the_handle_an_rpc_returns_in_its_first_output_parameter_is_handed_to_the_relay() {
    for masked in [false, true] {
        assert_eq!(handle_of(&[return_value(0, 1, Some(7))], masked), Some(7));
        // Other output parameters do not count; a UDF's result is no parameter.
        let others = [return_value(1, 1, Some(9)), return_value(0, 2, Some(8))];
        assert_eq!(
            handle_of(
                &[
                    others[0].clone(),
                    return_value(0, 1, Some(-3)),
                    others[1].clone()
                ],
                masked
            ),
            Some(-3)
        );
        // None, NULL, or two that cannot be told apart: no handle.
        assert_eq!(handle_of(&others, masked), None);
        assert_eq!(handle_of(&[return_value(0, 1, None)], masked), None);
        let two = [return_value(0, 1, Some(7)), return_value(0, 1, Some(8))];
        assert_eq!(handle_of(&two, masked), None);
    }
    // An answer the gateway lost track of hands back nothing.
    let mut body = prepexec_answer(&[return_value(0, 1, Some(7))]);
    body.insert(40, 0x01);
    let mut resp = Responses::new(BytesMut::new(), None);
    resp.inflight = inflight();
    let (_, ended) = run(&mut resp, &packets(&body, 100), 4096);
    assert_eq!((ended[0].handle, ended[0].rows), (None, None));
}

/// An answer's end as a test compares it: rows, handle, masked counts.
type EndSeen = (Option<u64>, Option<i64>, Option<String>);

/// What relaying `wire` in two pieces cut at `cut` gives: the bytes for the client, and each
/// answer's rows, handle and masked counts.
fn relay_cut(wire: &[u8], cut: usize, masked: bool) -> (BytesMut, Vec<EndSeen>) {
    let mut resp = Responses::new(BytesMut::new(), masked.then(|| masks(&["*.card"])));
    resp.inflight = inflight();
    let (mut out, mut ended) = (BytesMut::new(), Vec::new());
    for piece in [&wire[..cut], &wire[cut..]] {
        resp.packets.extend_from_slice(piece);
        resp.relay(512, &mut out, &mut ended).expect("relayed");
    }
    let ended = ended
        .into_iter()
        .map(|e| (e.rows, e.handle, e.masked.map(|m| m.to_string())))
        .collect();
    (out, ended)
}

#[test]
fn an_answer_cut_at_every_byte_boundary_is_relayed_the_same() {
    let mut body = prepexec_answer(&[return_value(0, 1, Some(7))]);
    body.extend(sample_metadata_token());
    body.extend(sample_row("Ada", &[b"mail ada@example.com", b" ok"]));
    body.extend(sample_nbcrow("Alan"));
    body.extend(done(0xFD, 0x10, 0xC1, 2));
    // Tokens cut across 61-byte packets.
    let wire = packets(&body, 61);
    for masked in [false, true] {
        let whole = relay_cut(&wire, wire.len(), masked);
        assert_eq!(whole.1, vec![(Some(4), Some(7), whole.1[0].2.clone())]);
        if masked {
            let (got, _) = payload_of(&whole.0);
            assert!(!contains(&got, &ucs2("ada@example.com")));
        } else {
            assert_eq!(&whole.0[..], &wire[..]);
        }
        for cut in 0..=wire.len() {
            assert_eq!(relay_cut(&wire, cut, masked), whole, "cut at {cut}");
        }
    }
}
