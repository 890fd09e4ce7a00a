//! Property tests of the request-side decoders: arbitrary and mutated bytes never panic, what
//! a decoder returns is never larger than the bytes it came from (a length read from the wire
//! is bounded by what is there before anything is allocated for it), and a message cut at any
//! byte boundary reassembles and parses to the same result.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use super::login7::Login7;
use super::packet::{self, MessageReader};
use super::prelogin::{self, PreLogin};
use super::request::{AllHeaders, SqlBatch, TransMgr, tm};
use super::rpc::{MAX_CALLS, MAX_PARAMS, RpcRequest};
use super::rpc_types::ParamValue;

const CASES: u32 = 256;

/// `valid` with some bytes replaced and perhaps cut short.
fn mutate(valid: &[u8], edits: &[(Index, u8)], cut: Option<Index>) -> Vec<u8> {
    let mut v = valid.to_vec();
    for (at, b) in edits {
        let i = at.index(v.len());
        v[i] = *b;
    }
    if let Some(c) = cut {
        v.truncate(c.index(v.len() + 1));
    }
    v
}

fn prelogin_fixture() -> Vec<u8> {
    PreLogin {
        version: prelogin::GATEWAY_VERSION,
        encryption: prelogin::ENCRYPT_ON,
        instance: Some(vec![0]),
        thread_id: Some(7),
        mars: Some(0),
        fed_auth_required: Some(1),
        nonce: Some([3; 32]),
        ..PreLogin::default()
    }
    .encode()
}

fn login_fixture() -> Vec<u8> {
    let l = Login7 {
        tds_version: 0x7400_0004,
        packet_size: 4096,
        host_name: "h".into(),
        user_name: "u".into(),
        password: "p".into(),
        app_name: "pytds".into(),
        database: "sales".into(),
        ..Login7::default()
    };
    let mut wire = l.encode().unwrap();
    // A FeatureExt block: FEDAUTH with a token, then UTF8_SUPPORT.
    let ptr_at = wire.len();
    wire.extend_from_slice(&u32::try_from(ptr_at + 4).unwrap().to_le_bytes());
    let tok = super::text::encode("eyJ.tok");
    wire.push(super::fedauth::FEATURE_FEDAUTH);
    wire.extend_from_slice(&u32::try_from(5 + tok.len()).unwrap().to_le_bytes());
    wire.push(super::fedauth::LIBRARY_SECURITY_TOKEN << 1);
    wire.extend_from_slice(&u32::try_from(tok.len()).unwrap().to_le_bytes());
    wire.extend_from_slice(&tok);
    wire.extend_from_slice(&[0x0A, 1, 0, 0, 0, 1, 0xFF]);
    wire[56..58].copy_from_slice(&u16::try_from(ptr_at).unwrap().to_le_bytes());
    wire[58..60].copy_from_slice(&4u16.to_le_bytes());
    wire[27] |= 0x10;
    let len = u32::try_from(wire.len()).unwrap();
    wire[..4].copy_from_slice(&len.to_le_bytes());
    wire
}

fn headers() -> Vec<u8> {
    let mut out = BytesMut::new();
    AllHeaders::with_transaction(0, 1).encode(&mut out).unwrap();
    out.to_vec()
}

fn batch_fixture() -> Vec<u8> {
    SqlBatch {
        headers: AllHeaders::with_transaction(5, 1),
        text: "select * from orders; delete from t where id = 1".into(),
    }
    .encode()
    .unwrap()
    .to_vec()
}

fn tm_fixture() -> Vec<u8> {
    let mut v = headers();
    v.extend_from_slice(&tm::COMMIT_XACT.to_le_bytes());
    v.extend_from_slice(&[2, b't', 0, 0x01, 2, 2, b'n', 0]);
    v
}

/// Two calls: sp_executesql with NVARCHAR, NVARCHAR(MAX) in PLP chunks and INTN parameters,
/// then a procedure by name with a DECIMAL; and an sp_prepare with an OUTPUT handle.
fn rpc_fixture() -> Vec<u8> {
    let mut v = headers();
    v.extend_from_slice(&[0xFF, 0xFF, 10, 0, 0, 0]);
    v.extend_from_slice(&[0, 0, 0xE7, 0x40, 0x1F, 0x09, 0x04, 0xD0, 0x00, 0x34, 4, 0]);
    v.extend_from_slice(&[b's', 0, b'1', 0]);
    v.extend_from_slice(&[0, 0, 0xE7, 0xFF, 0xFF, 0x09, 0x04, 0xD0, 0x00, 0x34]);
    v.extend_from_slice(&4u64.to_le_bytes());
    v.extend_from_slice(&[2, 0, 0, 0, b'@', 0, 2, 0, 0, 0, b'a', 0, 0, 0, 0, 0]);
    v.extend_from_slice(&[2, b'@', 0, b'a', 0, 0, 0x26, 4, 4, 1, 0, 0, 0]);
    v.extend_from_slice(&[
        0xFF, 1, 0, b'p', 0, 0, 0, 0, 0, 0x6A, 17, 18, 2, 5, 1, 1, 0, 0, 0,
    ]);
    v.extend_from_slice(&[0xFF, 0xFF, 0xFF, 11, 0, 0, 0]);
    v.extend_from_slice(&[0, 1, 0x26, 4, 0]);
    v.extend_from_slice(&[0, 0, 0xE7, 0x40, 0x1F, 0x09, 0x04, 0xD0, 0x00, 0x34, 0, 0]);
    v.extend_from_slice(&[0, 0, 0xE7, 0x40, 0x1F, 0x09, 0x04, 0xD0, 0x00, 0x34, 2, 0]);
    v.extend_from_slice(&[b'x', 0]);
    v
}

/// Bytes a request's decoded values hold, as UTF-8 for text (at most 3/2 of its UTF-16).
fn value_bytes(r: &RpcRequest) -> usize {
    r.calls
        .iter()
        .flat_map(|c| c.params.iter())
        .map(|p| match &p.value {
            ParamValue::Text(t) => t.len(),
            ParamValue::Other(b) => b.len(),
            ParamValue::Null | ParamValue::Int(_) => 0,
        })
        .sum()
}

fn check_rpc(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(r) = RpcRequest::parse(&Bytes::copy_from_slice(bytes)) {
        prop_assert!(!r.calls.is_empty() && r.calls.len() <= MAX_CALLS);
        prop_assert!(r.calls.iter().all(|c| c.params.len() <= MAX_PARAMS));
        prop_assert!(value_bytes(&r) <= bytes.len() * 3 / 2);
        for c in &r.calls {
            let _ = c.special();
            let _ = c.statement();
            let _ = c.procedure_name();
            let _ = c.handle();
        }
    }
    Ok(())
}

fn check_login(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(l) = Login7::parse(bytes) {
        let text = [
            &l.host_name,
            &l.user_name,
            &l.password,
            &l.app_name,
            &l.server_name,
            &l.library,
            &l.language,
            &l.database,
        ];
        prop_assert!(text.iter().all(|s| s.encode_utf16().count() <= 256));
        prop_assert!(l.password.encode_utf16().count() <= 128);
        let held = l.token.as_ref().map_or(0, |t| t.len() * 2 / 3)
            + l.features.iter().map(|(_, d)| d.len()).sum::<usize>();
        prop_assert!(held <= bytes.len());
        let _ = l.encode();
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn prelogin_survives_arbitrary_and_mutated_bytes(
        raw in vec(any::<u8>(), 0..300),
        edits in vec((any::<Index>(), any::<u8>()), 0..6),
        cut in proptest::option::of(any::<Index>()),
    ) {
        let _ = PreLogin::parse(&raw);
        let m = mutate(&prelogin_fixture(), &edits, cut);
        if let Ok(p) = PreLogin::parse(&m) {
            prop_assert!(p.encryption <= prelogin::ENCRYPT_REQ);
            prop_assert!(p.other.iter().map(|(_, d)| d.len()).sum::<usize>() <= m.len());
            prop_assert!(p.instance.as_ref().is_none_or(|i| i.len() <= 256));
        }
    }

    #[test]
    fn login7_survives_arbitrary_and_mutated_bytes(
        raw in vec(any::<u8>(), 0..400),
        edits in vec((any::<Index>(), any::<u8>()), 0..8),
        cut in proptest::option::of(any::<Index>()),
    ) {
        check_login(&raw)?;
        check_login(&mutate(&login_fixture(), &edits, cut))?;
    }

    #[test]
    fn batches_rpcs_and_transaction_requests_survive_arbitrary_and_mutated_bytes(
        raw in vec(any::<u8>(), 0..400),
        edits in vec((any::<Index>(), any::<u8>()), 0..8),
        cut in proptest::option::of(any::<Index>()),
    ) {
        let _ = SqlBatch::parse(&raw);
        let _ = TransMgr::parse(&Bytes::copy_from_slice(&raw));
        check_rpc(&raw)?;
        check_rpc(&mutate(&rpc_fixture(), &edits, cut))?;
        let b = mutate(&batch_fixture(), &edits, cut);
        if let Ok(parsed) = SqlBatch::parse(&b) {
            prop_assert!(parsed.text.len() <= b.len() * 3 / 2);
        }
        if let Ok(t) = TransMgr::parse(&Bytes::from(mutate(&tm_fixture(), &edits, cut))) {
            let _ = t.describe();
        }
    }

    #[test]
    fn the_message_reader_survives_any_stream_and_never_holds_more_than_its_bound(
        stream in vec(any::<u8>(), 0..2000),
        reads in vec(1usize..300, 1..20),
    ) {
        let mut r = MessageReader::new(512, 1500);
        let mut buf = BytesMut::new();
        let mut fed = 0;
        'feed: for n in reads.iter().cycle() {
            if fed == stream.len() {
                break;
            }
            let end = (fed + n).min(stream.len());
            buf.extend_from_slice(&stream[fed..end]);
            fed = end;
            loop {
                match r.next(&mut buf) {
                    Ok(Some(m)) => prop_assert!(m.payload.len() <= 1500),
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
            // A packet is taken only whole: what waits is less than one packet.
            prop_assert!(buf.len() < 512);
        }
    }

    #[test]
    fn a_message_reassembles_the_same_at_any_packet_size_and_read_sizes(
        payload in vec(any::<u8>(), 0..3000),
        size in 512usize..=4096,
        reads in vec(1usize..700, 1..10),
    ) {
        let mut wire = BytesMut::new();
        packet::put_message(&mut wire, packet::RPC, &payload, size, packet::STATUS_RESET);
        let mut r = MessageReader::new(size, 1 << 20);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut fed = 0;
        for n in reads.iter().cycle() {
            if fed == wire.len() {
                break;
            }
            let end = (fed + n).min(wire.len());
            buf.extend_from_slice(&wire[fed..end]);
            fed = end;
            while let Some(m) = r.next(&mut buf).unwrap() {
                got.push(m);
            }
        }
        prop_assert_eq!(got.len(), 1);
        prop_assert_eq!(&got[0].payload[..], &payload[..]);
        prop_assert!(got[0].resets_connection() && !got[0].is_ignored());
    }
}

/// The messages of `wire` read with one cut at `cut`: the first part, then the rest.
fn read_cut(wire: &[u8], cut: usize) -> Vec<packet::Message> {
    let mut r = MessageReader::new(512, 1 << 20);
    let mut buf = BytesMut::from(&wire[..cut]);
    let mut out = Vec::new();
    while let Some(m) = r.next(&mut buf).unwrap() {
        out.push(m);
    }
    buf.extend_from_slice(&wire[cut..]);
    while let Some(m) = r.next(&mut buf).unwrap() {
        out.push(m);
    }
    assert!(buf.is_empty());
    out
}

#[test]
fn every_request_cut_at_every_byte_boundary_parses_to_the_same_result() {
    let messages: Vec<(u8, Vec<u8>)> = vec![
        (packet::PRELOGIN, prelogin_fixture()),
        (packet::LOGIN7, login_fixture()),
        (packet::SQL_BATCH, batch_fixture()),
        (packet::RPC, rpc_fixture()),
        (packet::TRANS_MGR, tm_fixture()),
        // A batch over several 512-byte packets.
        (packet::SQL_BATCH, {
            let mut v = headers();
            v.extend(super::text::encode(&"select 1 -- padding\n".repeat(60)));
            v
        }),
    ];
    let mut wire = BytesMut::new();
    for (ty, payload) in &messages {
        packet::put_message(&mut wire, *ty, payload, 512, 0);
    }
    let parse = |m: &packet::Message| -> String {
        match m.ty {
            packet::PRELOGIN => format!("{:?}", PreLogin::parse(&m.payload)),
            packet::LOGIN7 => format!("{:?}", Login7::parse(&m.payload)),
            packet::SQL_BATCH => format!("{:?}", SqlBatch::parse(&m.payload)),
            packet::RPC => format!("{:?}", RpcRequest::parse(&m.payload)),
            _ => format!("{:?}", TransMgr::parse(&m.payload)),
        }
    };
    let whole: Vec<String> = read_cut(&wire, wire.len()).iter().map(parse).collect();
    assert_eq!(whole.len(), messages.len());
    assert!(whole.iter().all(|p| p.starts_with("Ok(")), "{whole:#?}");
    for cut in 0..=wire.len() {
        let got: Vec<String> = read_cut(&wire, cut).iter().map(parse).collect();
        assert_eq!(got, whole, "cut at {cut}");
    }
}
