use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use gateway_core::config::MaskingConfig;
use gateway_core::masking::{MaskingEngine, SessionMasks};

use super::{Ended, InFlight, Lineage, Responses};
use crate::codec::fixtures::{
    colmetadata, column, done, sample_columns, sample_metadata_token, sample_nbcrow, sample_row,
    ucs2, ushort_type, ushort_value,
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
