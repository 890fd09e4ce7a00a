use super::*;

#[test]
fn messages_split_over_packets_come_back_whole_at_any_read_boundary() {
    let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let mut wire = BytesMut::new();
    put_message(&mut wire, SQL_BATCH, &payload, 512, STATUS_RESET);
    assert_eq!(
        wire.len(),
        payload.len() + payload.len().div_ceil(512 - HEADER_LEN) * HEADER_LEN
    );
    for cut in [1, 7, 8, 9, 511, 512, 513, 2000, wire.len() - 1] {
        let mut r = MessageReader::new(512, 1 << 20);
        let mut buf = BytesMut::from(&wire[..cut]);
        let first = r.next(&mut buf).unwrap();
        let m = match first {
            Some(m) => m,
            None => {
                buf.extend_from_slice(&wire[cut..]);
                r.next(&mut buf).unwrap().unwrap()
            }
        };
        assert_eq!(m.ty, SQL_BATCH);
        assert_eq!(m.status & STATUS_RESET, STATUS_RESET);
        assert_eq!(&m.payload[..], &payload[..]);
        assert!(buf.is_empty());
    }
}

#[test]
fn bad_lengths_and_oversized_messages_are_errors() {
    let mut r = MessageReader::new(4096, 1000);
    let mut short = BytesMut::from(&[1u8, 1, 0, 4, 0, 0, 1, 0][..]);
    assert!(r.next(&mut short).is_err());
    let mut huge = BytesMut::from(&[1u8, 1, 0x7f, 0xff, 0, 0, 1, 0][..]);
    assert!(matches!(
        MessageReader::new(4096, 1 << 20).next(&mut huge),
        Err(CodecError::TooLong { what: "packet", .. })
    ));
    let mut wire = BytesMut::new();
    put_message(&mut wire, SQL_BATCH, &[0u8; 1500], 512, 0);
    assert!(matches!(
        r.next(&mut wire),
        Err(CodecError::TooLong {
            what: "message",
            ..
        })
    ));
}

#[test]
fn an_attention_abandons_the_message_being_assembled() {
    let mut wire = BytesMut::new();
    put_message_part(&mut wire, SQL_BATCH, &[1u8; 600], 512, 0, false);
    put_message(&mut wire, ATTENTION, &[], 512, 0);
    let mut r = MessageReader::new(512, 1 << 20);
    let m = r.next(&mut wire).unwrap().unwrap();
    assert_eq!(m.ty, ATTENTION);
    assert!(r.partial.is_none());
}

fn packet(ty: u8, status: u8, id: u8, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(HEADER_LEN + payload.len()).unwrap();
    let mut v = vec![ty, status];
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(&[0x00, 0x37, id, 0x00]);
    v.extend_from_slice(payload);
    v
}

#[test]
fn a_message_fed_byte_by_byte_keeps_its_first_and_last_status() {
    let mut wire = packet(RPC, STATUS_RESET, 1, b"first-");
    wire.extend(packet(RPC, 0x00, 2, b"second-"));
    wire.extend(packet(RPC, STATUS_EOM, 3, b"third"));
    let mut r = MessageReader::new(512, 1 << 20);
    let mut buf = BytesMut::new();
    let mut got = None;
    for b in &wire {
        buf.extend_from_slice(&[*b]);
        if let Some(m) = r.next(&mut buf).unwrap() {
            assert!(got.is_none());
            got = Some(m);
        }
    }
    let m = got.unwrap();
    assert_eq!(m.ty, RPC);
    assert_eq!(&m.payload[..], b"first-second-third");
    assert_eq!((m.status, m.last_status), (STATUS_RESET, STATUS_EOM));
    assert!(m.resets_connection() && !m.is_ignored());
    assert!(r.partial.is_none());
}

#[test]
fn the_ignore_bit_on_the_last_packet_marks_a_cancelled_message() {
    let mut wire = packet(SQL_BATCH, 0x00, 1, b"delete from t where");
    wire.extend(packet(SQL_BATCH, STATUS_EOM | STATUS_IGNORE, 2, b""));
    let mut buf = BytesMut::from(&wire[..]);
    let m = MessageReader::new(512, 1024)
        .next(&mut buf)
        .unwrap()
        .unwrap();
    assert!(m.is_ignored());
    assert_eq!(m.status, 0, "the first packet's status is kept apart");
    let mut one = BytesMut::from(&packet(SQL_BATCH, STATUS_EOM, 1, b"x")[..]);
    let m = MessageReader::new(512, 1024)
        .next(&mut one)
        .unwrap()
        .unwrap();
    assert!(!m.is_ignored() && !m.resets_connection());
}

#[test]
fn mixed_packet_types_in_one_message_are_refused() {
    let mut wire = packet(SQL_BATCH, 0x00, 1, b"abc");
    wire.extend(packet(RPC, STATUS_EOM, 2, b"def"));
    let mut buf = BytesMut::from(&wire[..]);
    let err = MessageReader::new(512, 1024).next(&mut buf).unwrap_err();
    assert!(matches!(err, CodecError::Invalid(_)));
}

#[test]
fn the_message_bound_is_checked_before_the_message_grows() {
    let mut wire = packet(SQL_BATCH, 0x00, 1, &[b'x'; 60]);
    wire.extend(packet(SQL_BATCH, STATUS_EOM, 2, &[b'y'; 60]));
    let mut buf = BytesMut::from(&wire[..]);
    let err = MessageReader::new(512, 100).next(&mut buf).unwrap_err();
    assert_eq!(
        err,
        CodecError::TooLong {
            what: "message",
            len: 120,
            max: 100
        }
    );
    let mut buf = BytesMut::from(&packet(SQL_BATCH, STATUS_EOM, 1, &[0u8; 101])[..]);
    assert!(MessageReader::new(512, 100).next(&mut buf).is_err());
}
