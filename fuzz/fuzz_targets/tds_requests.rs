//! Reassembles any byte stream into TDS messages, in small and large chunks, and runs every
//! request decoder on every payload (PRELOGIN, LOGIN7 with its features, SQLBatch, RPC with
//! every call, Transaction Manager). Decoders must return errors, never panic; chunking must
//! never change which messages are read; a decoded PRELOGIN or LOGIN7 re-encodes to a message
//! that decodes to the same value.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use proxy_tds::codec::login7::Login7;
use proxy_tds::codec::packet::{Message, MessageReader};
use proxy_tds::codec::prelogin::PreLogin;
use proxy_tds::codec::request::{SqlBatch, TransMgr};
use proxy_tds::codec::rpc::RpcRequest;

/// Small enough that the fuzzer reaches the size limits with short inputs.
const MAX_PACKET: usize = 4096;
const MAX_MESSAGE: usize = 16 * 1024;

fn decode_all(payload: &Bytes) {
    if let Ok(p) = PreLogin::parse(payload) {
        assert_eq!(PreLogin::parse(&p.encode()).ok().map(|q| q.encryption), Some(p.encryption));
    }
    if let Ok(l) = Login7::parse(payload)
        && let Ok(wire) = l.encode()
    {
        let again = Login7::parse(&wire).expect("an encoded LOGIN7 decodes");
        assert_eq!(again.user_name, l.user_name);
        assert_eq!(again.database, l.database);
    }
    let _ = SqlBatch::parse(payload);
    if let Ok(r) = RpcRequest::parse(payload) {
        for call in &r.calls {
            let _ = call.special();
            let _ = call.statement();
            let _ = call.procedure_name();
            let _ = call.handle();
        }
    }
    if let Ok(t) = TransMgr::parse(payload) {
        let _ = t.describe();
    }
}

fn messages(data: &[u8], chunk: usize) -> Vec<Message> {
    let mut reader = MessageReader::new(MAX_PACKET, MAX_MESSAGE);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match reader.next(&mut buf) {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(_) => return out,
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let (chunk, data) = match data.split_first() {
        Some((&c, rest)) => (usize::from(c), rest),
        None => return,
    };
    let whole = messages(data, data.len());
    let chunked = messages(data, chunk);
    assert_eq!(whole.len(), chunked.len());
    for (a, b) in whole.iter().zip(&chunked) {
        assert_eq!(a.payload, b.payload);
    }
    for m in &whole {
        decode_all(&m.payload);
    }
    // The raw bytes as a payload too: decoders see shapes no packet framing would let by.
    decode_all(&Bytes::copy_from_slice(data));
});
